"""Tags a live stream of raw audio: one line per hop with the time and the top classes.

  ffmpeg -i input.mp3 -f s16le -ac 1 -ar 22050 - | samplecnn stream RUN_OR_EXPORT --stdin [--window 1 --hop 0.25]

The stream is raw signed 16-bit little-endian mono PCM at the model's sample rate
(export.json or the run's config.json says which). The model runs on the last window of
audio every hop; at the end of the stream the tail gets one more window.
"""
import sys

from absl import flags

from samplecnn.cli import UsageError, flag, run

flags.DEFINE_boolean("stdin", False, "Read the stream from standard input (the only source for now).")
flags.DEFINE_float("window", 1.0, "Seconds of audio the model looks at.")
flags.DEFINE_float("hop", 0.25, "Seconds between two windows (one output line each).")
flags.DEFINE_integer("top-k", 3, "Classes per line.", lower_bound=1)


def main(argv):
    import numpy as np

    from samplecnn.inference import Tagger, window_samples
    from samplecnn.streaming import StreamTagger

    if len(argv) != 2 or not flag("stdin"):
        raise UsageError("usage: samplecnn stream RUN_OR_EXPORT --stdin (raw s16le mono PCM at the model's rate)")
    try:
        tagger = Tagger.load(argv[1])
        window_samples(flag("window"), flag("hop"), tagger.sample_rate)
    except (FileNotFoundError, ValueError, OSError) as error:
        raise UsageError(str(error)) from None
    stream = StreamTagger(tagger, flag("window"), flag("hop"))
    print(f"listening: s16le mono at {tagger.sample_rate} Hz, window {flag('window')} s, hop {flag('hop')} s",
          file=sys.stderr)
    chunk_bytes = 2 * max(1, int(flag("hop") * tagger.sample_rate))
    pending = b""
    while data := sys.stdin.buffer.read(chunk_bytes):
        data, pending = pending + data, b""
        if len(data) % 2:
            data, pending = data[:-1], data[-1:]
        show(tagger, stream.push(np.frombuffer(data, "<i2").astype(np.float32) / 32768.0))
    show(tagger, stream.flush())
    return 0


def show(tagger, predictions):
    for p in predictions:
        top = ", ".join(f"{name} {score:.3f}" for name, score in tagger.top(p.scores, flag("top-k")))
        print(f"{p.start:8.2f}-{p.end:8.2f} s  {top}", flush=True)


def run_cli():
    run(__name__)
