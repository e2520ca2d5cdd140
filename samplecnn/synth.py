"""A small Speech Commands v0.02 look-alike spoken by espeak-ng, in the real layout.

  python -m samplecnn.synth OUT_DIR [--per-word 100] [--words yes,no] [--speakers 150] [--seed 0] [--overwrite]

Writes ``OUT_DIR/<word>/<speaker>_nohash_<n>.wav`` (16 kHz, 16-bit mono, 1 s),
``validation_list.txt``, ``testing_list.txt`` and ``_background_noise_/``, exactly as the
unpacked speech_commands_v0.02.tar.gz, so ``build_dataset.py scd`` reads it unchanged.
A speaker is an English accent, a voice variant, a speaking rate and a pitch; each
speaker belongs to one split only (10% test, 10% validation), as in the real data set.
Deterministic for a given seed.
"""
import argparse
import concurrent.futures
import hashlib
import io
import multiprocessing
import pathlib
import random
import shutil
import subprocess
import sys

import numpy as np
import soundfile
import soxr

from samplecnn.datasets.scd import BACKGROUND_NOISE, CLASSES as WORDS

SAMPLE_RATE = 16000
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
            "klatt3", "klatt4", "adam", "alex", "andy", "annie", "aunty", "benjamin", "caleb", "david", "ed", "edward",
            "gene", "john", "linda", "max", "michel", "norbert", "paul", "rob", "robert", "steph", "travis", "zac")
TEST_FRACTION = VAL_FRACTION = 0.1
MARKER = ".samplecnn-synth"
"""Marks a folder written by this module, which a later run may replace without --overwrite."""


class SynthError(Exception):
    """espeak-ng is missing or failed."""


def make_speakers(count, seed):
    """``count`` distinct speakers: (id, accent, variant, words per minute, pitch)."""
    rng, speakers, seen = random.Random(seed), [], set()
    while len(speakers) < count:
        voice = (rng.choice(ACCENTS), rng.choice(VARIANTS), rng.randrange(120, 200, 5), rng.randrange(25, 80, 5))
        if voice in seen:
            continue
        seen.add(voice)
        speaker_id = hashlib.sha1(repr((seed, voice)).encode()).hexdigest()[:8]
        speakers.append((speaker_id, *voice))
    return speakers


def split_speakers(speakers):
    """{speaker id: split}: the first 10% of speakers by id are test, the next 10% validation."""
    ids = sorted(s[0] for s in speakers)
    n_test, n_val = round(TEST_FRACTION * len(ids)), round(VAL_FRACTION * len(ids))
    return {sid: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, sid in enumerate(ids)}


def speak(word, accent, variant, rate, pitch):
    """espeak-ng's rendering of ``word`` as float32 samples at its native 22050 Hz."""
    try:
        result = subprocess.run(["espeak-ng", "-v", f"{accent}+{variant}", "-s", str(rate), "-p", str(pitch),
                                 "--stdout", word], capture_output=True, check=True)
    except FileNotFoundError:
        raise SynthError("espeak-ng is not installed: apt-get install espeak-ng (make demo does it)") from None
    except subprocess.CalledProcessError as error:
        raise SynthError(f"espeak-ng failed for {word!r} with voice {accent}+{variant}: {error.stderr.decode()}")
    audio, rate_hz = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    return audio, rate_hz


def render_clip(job):
    """Writes one 1-s clip: speech trimmed, resampled, placed at a random offset, with gain and noise."""
    path, word, (speaker_id, accent, variant, rate, pitch), seed = job
    rng = np.random.default_rng(seed)
    audio, native_rate = speak(word, accent, variant, rate, pitch)
    loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
    audio = audio[loud[0]:loud[-1] + 1] if loud.size else audio
    audio = soxr.resample(audio, native_rate, SAMPLE_RATE)[:SAMPLE_RATE]
    clip = np.zeros(SAMPLE_RATE, np.float32)
    offset = rng.integers(0, SAMPLE_RATE - audio.size + 1)
    clip[offset:offset + audio.size] = audio / max(np.abs(audio).max(), 1e-6) * rng.uniform(0.2, 0.9)
    noise_db = rng.uniform(-60, -35)
    clip += rng.normal(scale=10 ** (noise_db / 20), size=clip.size).astype(np.float32)
    soundfile.write(path, np.clip(clip, -1, 1), SAMPLE_RATE, subtype="PCM_16")


def background_noise(out_dir, seed, seconds=10):
    """White and pink noise files, like two of the real _background_noise_ recordings."""
    rng = np.random.default_rng(seed)
    folder = out_dir / BACKGROUND_NOISE
    folder.mkdir(parents=True, exist_ok=True)
    white = rng.normal(scale=0.1, size=seconds * SAMPLE_RATE)
    spectrum = np.fft.rfft(rng.normal(size=seconds * SAMPLE_RATE))
    spectrum /= np.sqrt(np.maximum(np.arange(spectrum.size), 1))
    pink = np.fft.irfft(spectrum)
    pink *= 0.1 / pink.std()
    for name, noise in (("white_noise.wav", white), ("pink_noise.wav", pink)):
        soundfile.write(folder / name, np.clip(noise, -1, 1), SAMPLE_RATE, subtype="PCM_16")


def prepare_folder(out_dir, overwrite=False):
    """Makes ``out_dir`` an empty folder holding only the marker.

    A non-empty folder is replaced only when it is an earlier output of this module (it
    holds the marker, written first so that even an interrupted run is recognised) or
    when ``overwrite`` is given: nothing else the user owns is deleted.
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} is a file, not a folder: choose a folder to write the data set to")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).is_file() and not overwrite:
            raise ValueError(f"{out_dir} is not empty and was not written by samplecnn.synth: choose an empty or new "
                             "folder, or pass --overwrite to delete everything in it")
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("Written by python -m samplecnn.synth, which replaces this folder when run again.\n")


def generate(out_dir, per_word=100, words=WORDS, speakers=150, seed=0, workers=None, progress=None,
             overwrite=False):
    """Writes the data set to ``out_dir``; returns {split: clip count}.

    ``out_dir`` must be new, empty or an earlier output of this function, unless ``overwrite``.

    Word w's clip i is spoken by speaker (i + w) modulo the speaker count, repeating
    a speaker (``_nohash_1``, ...) when ``per_word`` exceeds the number of speakers.
    """
    unknown = sorted(set(words) - set(WORDS))
    if unknown:
        raise ValueError(f"not Speech Commands v0.02 words: {unknown}; choose from {', '.join(WORDS)}")
    out_dir = pathlib.Path(out_dir)
    prepare_folder(out_dir, overwrite)
    voices = make_speakers(speakers, seed)
    split_of = split_speakers(voices)
    jobs, lists = [], {"val": [], "test": []}
    for w, word in enumerate(words):
        (out_dir / word).mkdir(parents=True)
        for i in range(per_word):
            speaker = voices[(i + w) % len(voices)]
            name = f"{speaker[0]}_nohash_{(i + w) // len(voices)}.wav"
            jobs.append((str(out_dir / word / name), word, speaker, seed * 1_000_003 + len(jobs)))
            if split_of[speaker[0]] in lists:
                lists[split_of[speaker[0]]].append(f"{word}/{name}")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        for done, _ in enumerate(pool.map(render_clip, jobs, chunksize=64), start=1):
            if progress and (done % 500 == 0 or done == len(jobs)):
                progress(done, len(jobs))
    (out_dir / "validation_list.txt").write_text("".join(f"{p}\n" for p in sorted(lists["val"])))
    (out_dir / "testing_list.txt").write_text("".join(f"{p}\n" for p in sorted(lists["test"])))
    background_noise(out_dir, seed)
    counts = {split: len(paths) for split, paths in lists.items()}
    counts["train"] = len(jobs) - counts["val"] - counts["test"]
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write (e.g. data/demo/scd/raw); an earlier output is replaced, "
                        "any other non-empty folder refused")
    parser.add_argument("--overwrite", action="store_true", help="delete the contents of a non-empty OUT_DIR "
                        "that is not an earlier output")
    parser.add_argument("--per-word", type=int, default=100, help="clips per word (default 100)")
    parser.add_argument("--words", default=",".join(WORDS), help="comma-separated subset of the 35 words")
    parser.add_argument("--speakers", type=int, default=150, help="distinct speakers (default 150)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        counts = generate(args.out_dir, args.per_word, tuple(args.words.split(",")), args.speakers, args.seed,
                          args.workers, progress=lambda d, n: print(f"\rclips {d}/{n}", end="", file=sys.stderr),
                          overwrite=args.overwrite)
    except (SynthError, ValueError) as error:
        print(f"\nerror: {error}", file=sys.stderr)
        return 2
    print(f"\nwrote {args.out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
