"""Turning command-line inputs (files, folders, archives) into a list of audio files."""
import dataclasses
import pathlib
import tarfile
import tempfile
import zipfile

from samplecnn.audio import is_audio_file

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")


@dataclasses.dataclass
class Inputs:
    """Audio files found, and inputs that could not be used, with the reason.

    ``names`` maps a file extracted from an archive to the name to show for it
    (``archive.zip/member/path.wav``) instead of its temporary path.
    """

    files: list = dataclasses.field(default_factory=list)
    failures: list = dataclasses.field(default_factory=list)
    names: dict = dataclasses.field(default_factory=dict)

    def name(self, path):
        return self.names.get(str(path), str(path))


def is_archive(path):
    return str(path).lower().endswith(ARCHIVE_SUFFIXES)


def _extract(archive, destination):
    """Extracts ``archive`` into ``destination`` and returns the audio files, sorted."""
    if str(archive).lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.namelist() if is_audio_file(m) and not m.endswith("/")]
            z.extractall(destination, members)
    else:
        with tarfile.open(archive) as t:
            members = [m for m in t.getmembers() if m.isfile() and is_audio_file(m.name)]
            t.extractall(destination, members, filter="data")
    return sorted(p for p in pathlib.Path(destination).rglob("*") if p.is_file())


def expand_inputs(inputs, scratch):
    """Audio files of ``inputs``: files as given, folders searched recursively, archives
    extracted below ``scratch`` (a folder that must outlive the use of the files)."""
    found = Inputs()
    for item in map(pathlib.Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.is_file() and is_audio_file(p))
            if not files:
                found.failures.append({"path": str(item), "error": "folder holds no audio files"})
            found.files.extend(files)
        elif is_archive(item) and item.is_file():
            destination = tempfile.mkdtemp(dir=scratch)
            try:
                files = _extract(item, destination)
            except (zipfile.BadZipFile, tarfile.TarError, OSError) as error:
                found.failures.append({"path": str(item), "error": f"cannot read archive: {error}"})
                continue
            if not files:
                found.failures.append({"path": str(item), "error": "archive holds no audio files"})
            found.files.extend(files)
            found.names.update({str(f): f"{item}/{f.relative_to(destination).as_posix()}" for f in files})
        elif item.exists():
            found.files.append(item)
        else:
            found.failures.append({"path": str(item), "error": "no such file or folder"})
    return found
