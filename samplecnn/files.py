"""Turning command-line inputs (files, folders, archives) into a list of audio files."""
import dataclasses
import pathlib
import shutil
import tarfile
import tempfile
import zipfile
import zlib

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


ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)
"""What reading a broken archive raises: bad headers, truncated or corrupt compressed data."""


def _extract(archive, destination):
    """Extracts the audio members of ``archive``, each into a folder of its own below
    ``destination``; returns ([(path, member name)], [(member name, why it failed)]).

    A member that cannot be read (bad CRC, truncated data) fails alone: the members before
    it, and in a zip the members after it, are still extracted.
    """
    extracted, failed = [], []

    def extract(name, unpack):
        folder = pathlib.Path(tempfile.mkdtemp(dir=destination))
        try:
            unpack(folder)
        except Exception:
            shutil.rmtree(folder)  # a partial file is never used
            raise
        (path,) = (p for p in folder.rglob("*") if p.is_file())
        extracted.append((path, path.relative_to(folder).as_posix()))

    if str(archive).lower().endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if is_audio_file(name) and not name.endswith("/"):
                    try:
                        extract(name, lambda folder: z.extract(name, folder))
                    except (*ARCHIVE_ERRORS, NotImplementedError, RuntimeError) as error:  # RuntimeError: encrypted
                        failed.append((name, f"cannot extract: {error}"))
        return extracted, failed
    with tarfile.open(archive) as t:
        reading = None  # the member whose data is being read
        try:
            for member in t:
                if member.isfile() and is_audio_file(member.name):
                    reading = member.name
                    try:
                        extract(member.name, lambda folder: t.extract(member, folder, filter="data"))
                    except tarfile.FilterError as error:
                        failed.append((member.name, f"refused: {error}"))
                    reading = None
        except ARCHIVE_ERRORS as error:  # nothing after this point can be read
            failed.append((reading, f"archive is truncated or corrupt {'here' if reading else 'after the members read'}"
                                    f": {error}"))
    return extracted, failed


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
            try:
                extracted, failed = _extract(item, tempfile.mkdtemp(dir=scratch))
            except ARCHIVE_ERRORS as error:
                found.failures.append({"path": str(item), "error": f"cannot read archive: {error}"})
                continue
            found.failures.extend({"path": f"{item}/{name}" if name else str(item), "error": error}
                                  for name, error in failed)
            if not extracted and not failed:
                found.failures.append({"path": str(item), "error": "archive holds no audio files"})
            for path, name in sorted(extracted, key=lambda pair: pair[1]):
                found.files.append(path)
                found.names[str(path)] = f"{item}/{name}"
        elif item.exists():
            found.files.append(item)
        else:
            found.failures.append({"path": str(item), "error": "no such file or folder"})
    return found
