"""Small raw data sets in the exact layouts of the real downloads, generated on the fly.

Audio is synthetic: a tone whose frequency encodes the class (so a model can learn it),
plus noise; MP3s are encoded with ffmpeg.
"""
import pathlib
import shutil
import subprocess

import numpy as np
import soundfile

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"


def tone(seconds, sample_rate, frequency, seed=0, amplitude=0.5):
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    signal = amplitude * np.sin(2 * np.pi * frequency * t) + 0.01 * rng.normal(size=t.size)
    return signal.astype(np.float32)


def write_wav(path, audio, sample_rate, subtype="PCM_16"):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio, sample_rate, subtype=subtype)
    return path


def write_encoded(path, audio, sample_rate):
    """Writes ``audio`` in the format of ``path``'s suffix (mp3, m4a, ...) through ffmpeg."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "s16le", "-ar", str(sample_rate), "-ac", "1",
                    "-i", "-", str(path)], input=pcm, check=True)
    return path


def class_frequency(index):
    return 220.0 * 2 ** (index / 4)


def make_scd(raw, words=("yes", "no", "up"), per_word=4, sample_rate=16000):
    """Speech Commands v0.02 layout: word folders, both lists, _background_noise_.

    Per word: clip 0 in testing_list.txt, clip 1 in validation_list.txt, the rest train.
    The first word's last clip is 0.4 s long (shorter than the 1 s clip length).
    """
    raw = pathlib.Path(raw)
    val, test = [], []
    for w, word in enumerate(words):
        for i in range(per_word):
            seconds = 0.4 if (w == 0 and i == per_word - 1) else 1.0
            name = f"{w:02x}{i:06x}_nohash_0.wav"
            write_wav(raw / word / name, tone(seconds, sample_rate, class_frequency(w), seed=w * 100 + i),
                      sample_rate)
            (test if i == 0 else val if i == 1 else []).append(f"{word}/{name}")
    write_wav(raw / "_background_noise_" / "white_noise.wav", tone(3.0, sample_rate, 50.0), sample_rate)
    (raw / "validation_list.txt").write_text("".join(f"{p}\n" for p in val))
    (raw / "testing_list.txt").write_text("".join(f"{p}\n" for p in test))
    (raw / "LICENSE").write_text("CC-BY-4.0\n")
    return raw


def copy_fixture(name, destination):
    destination = pathlib.Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / name, destination)
    return destination


MTT_EXTRA_TAGS = ("extra rare", "extra unused", "extra odd")


def make_mtt(raw, classes, sample_rate=16000):
    """MagnaTagATune layout: quoted tab-separated annotations_final.csv + mp3/{0..f}/*.mp3.

    Train clips in folders 0, 5, a; a zero-byte mp3 in b (as in the real download); val
    in c; test in d and f; one clip in 1 has only a non-top-50 tag and must be dropped.
    Clip k carries the tags whose index is k modulo 4. Returns {clip_id: (path, tags)}.
    """
    raw = pathlib.Path(raw)
    for folder in "0123456789abcdef":
        (raw / "mp3" / folder).mkdir(parents=True, exist_ok=True)
    layout = [("0", 29.1), ("5", 29.1), ("a", 10.0), ("b", None), ("c", 29.1), ("c", 29.1), ("d", 29.1),
              ("f", 29.1), ("1", 29.1)]
    columns = ["clip_id", *MTT_EXTRA_TAGS[:1], *classes, *MTT_EXTRA_TAGS[1:], "mp3_path"]
    lines, clips = ["\t".join(f'"{c}"' for c in columns)], {}
    for k, (folder, seconds) in enumerate(layout):
        clip_id = str(k * 7 + 2)
        mp3_path = f"{folder}/artist_{k}-album-track_{k}-30-59.mp3"
        tags = [] if folder == "1" else [c for i, c in enumerate(classes) if i % 4 == k % 4]
        values = {c: "1" if c in tags else "0" for c in columns[1:-1]}
        if folder == "1":
            values[MTT_EXTRA_TAGS[0]] = "1"
        path = raw / "mp3" / mp3_path
        if seconds is None:
            path.write_bytes(b"")
        else:
            write_encoded(path, tone(seconds, sample_rate, class_frequency(k), seed=k), sample_rate)
        clips[clip_id] = (path, tags)
        lines.append("\t".join(f'"{v}"' for v in [clip_id, *[values[c] for c in columns[1:-1]], mp3_path]))
    (raw / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    return clips


def make_dcs(raw, audio_for, sample_rate=44100):
    """DCASE 2017 Task 4 layout: the three real ground-truth CSVs and audio files named
    'Y' + CSV name in the three audio folders, for the files in ``audio_for`` only
    ({folder: [names]}); the other rows of the CSVs have no audio, as in real downloads.
    """
    raw = pathlib.Path(raw)
    for part in ("training", "testing", "evaluation"):
        copy_fixture(f"dcs/groundtruth_weak_label_{part}_set.csv", raw / f"groundtruth_weak_label_{part}_set.csv")
    for k, (folder, names) in enumerate(sorted(audio_for.items())):
        for i, name in enumerate(names):
            write_wav(raw / folder / f"Y{name}", tone(10.0, sample_rate, class_frequency(i), seed=k * 50 + i),
                      sample_rate)
    return raw


def make_tones(root, classes=3, per_class=100):
    """Folder data set of 1-s tones: each class a clearly different pitch."""
    for c in range(classes):
        for i in range(per_class):
            seconds = 0.6 + 0.4 * (i % 2)
            signal = tone(seconds, 16000, class_frequency(4 * c) * (1 + 0.02 * (i % 5)), seed=i,
                                  amplitude=0.2 + 0.03 * (i % 7))
            write_wav(root / f"class{c}" / f"{i}.wav", signal, 16000)


DCS_FOLDERS = {
    "training": "unbalanced_train_segments_training_set_audio_formatted_and_segmented_downloads",
    "testing": "unbalanced_train_segments_testing_set_audio_formatted_and_segmented_downloads",
    "evaluation": "evaluation_set_formatted_audio_segments",
}


def make_full_dcs(raw):
    """The complete real DCASE 2017 Task 4 ground truth (the training CSV whole, from its
    gzipped fixture) with an empty stub 'audio' file for every listed clip, in the three
    audio folders: enough for indexing, never decoded. Returns {name: stub path}."""
    import gzip

    raw = pathlib.Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    with gzip.open(FIXTURES / "dcs" / "full" / "groundtruth_weak_label_training_set.csv.gz") as source, \
            open(raw / "groundtruth_weak_label_training_set.csv", "wb") as target:
        shutil.copyfileobj(source, target)
    for part in ("testing", "evaluation"):
        copy_fixture(f"dcs/groundtruth_weak_label_{part}_set.csv", raw / f"groundtruth_weak_label_{part}_set.csv")
    stubs = {}
    for part, folder in DCS_FOLDERS.items():
        (raw / folder).mkdir(exist_ok=True)
        for line in (raw / f"groundtruth_weak_label_{part}_set.csv").read_text().splitlines():
            name = line.split("\t")[0]
            if name and name not in stubs:
                stubs[name] = raw / folder / f"Y{name}"
                stubs[name].touch()
    return stubs
