"""Builds sharded TFRecords from a raw data set download.

  python build_dataset.py mtt|scd|dcs [--data-dir ./data] [--recipe samplecnn|2019] [--dry-run]
  python build_dataset.py folder --raw-dir DIR --name NAME
  python build_dataset.py csv --csv FILE --name NAME
  python build_dataset.py folder --raw-dir DIR --name NAME --folds 5 [--group-pattern '^([0-9a-f]{8})_']
  python build_dataset.py csv --csv FILE --name NAME --fold-column fold
"""
from absl import flags

from samplecnn.cli import FLAGS, ProgressLine, UsageError, flag, format_seconds, run
from samplecnn.recipes import DEFAULT_RECIPE

DATASETS = ("mtt", "scd", "dcs", "folder", "csv")

flags.DEFINE_string("data-dir", "./data", "Data root: raw files in DATA_DIR/<name>/raw, shards in DATA_DIR/<name>/tfrecord.")
flags.DEFINE_string("raw-dir", None, "folder: the folder with one sub-folder of audio files per class; mtt/scd/dcs: "
                    "the raw download, if not in DATA_DIR/<name>/raw.")
flags.DEFINE_string("csv", None, "csv: a CSV with columns path,labels[,split]; labels separated by ';'.")
flags.DEFINE_string("name", None, "folder/csv: name of the data set (output in DATA_DIR/NAME/tfrecord).")
flags.DEFINE_integer("workers", None, "Worker processes (default: all cores).", lower_bound=1)
flags.DEFINE_enum("sample-dtype", "int16", ["int16", "float32"], "How PCM samples are stored.")
flags.DEFINE_boolean("overwrite", False, "Rebuild from scratch instead of resuming.")
flags.DEFINE_boolean("verify", False, "Re-read every finished shard (checksum, record count) and rebuild damaged "
                     "ones; without it only their sizes are checked.")
flags.DEFINE_integer("seed", 0, "Seed of the train shuffle and of generated splits.")
flags.DEFINE_float("min-seconds", None, "Skip clips shorter than this instead of looping them (default: a tenth of "
                   "the clip length).")
flags.DEFINE_integer("sample-rate", None, "folder/csv: sample rate in Hz (default 22050).", lower_bound=1)
flags.DEFINE_float("clip-seconds", None, "folder/csv: clip length; shorter clips are looped (default 1).")
flags.DEFINE_integer("segment-samples", None, "folder/csv: samples per segment (default 22050).", lower_bound=81)
flags.DEFINE_float("val-fraction", None, "folder/csv: fraction of each class for validation (default 0.1).")
flags.DEFINE_float("test-fraction", None, "folder/csv: fraction of each class for test (default 0.1).")
flags.DEFINE_integer("folds", None, "folder: build a fold set of this many stratified folds (at least 3) for "
                     "train.py --cv, instead of train/val/test splits.")
flags.DEFINE_string("group-pattern", None, "folder with --folds: a regular expression on file names; clips whose "
                    "names share its first group (e.g. a speaker id, '^([0-9a-f]{8})_') are in the same fold.")
flags.DEFINE_string("fold-column", None, "csv: build a fold set whose folds this CSV column names (e.g. "
                    "UrbanSound8K's 'fold'), for train.py --cv, instead of train/val/test splits.")
flags.DEFINE_string("recipe", DEFAULT_RECIPE, "Recipe (samplecnn or 2019): samplecnn loops short clips, 2019 "
                    "stretches them with np.repeat as the 2019 code did.")
flags.DEFINE_boolean("dry-run", False, "Only index the raw files: print the clips per split, the classes and the "
                     "failures found before decoding; decode and write nothing.")

FAILURES_SHOWN = 5


def main(argv):
    from samplecnn.build import BuildLocked, build_dataset, index_dataset
    from samplecnn.datasets import LayoutError
    from samplecnn.recipes import list_recipes

    if len(argv) != 2 or argv[1] not in DATASETS:
        raise UsageError(f"usage: build_dataset.py {{{'|'.join(DATASETS)}}} [options]; got {argv[1:]}")
    dataset = argv[1]
    custom = {k: flag(k) for k in ("sample-rate", "clip-seconds", "segment-samples", "val-fraction", "test-fraction",
                                   "folds", "group-pattern", "fold-column")}
    custom = {k.replace("-", "_"): v for k, v in custom.items() if v is not None}
    if dataset not in ("folder", "csv") and custom:
        raise UsageError(f"{', '.join('--' + k.replace('_', '-') for k in custom)} only apply to folder and csv "
                         f"data sets; {dataset} has a fixed spec")
    misplaced = [option for option, applies in (("--csv", dataset == "csv"), ("--raw-dir", dataset != "csv"),
                                                ("--name", dataset in ("folder", "csv")),
                                                ("--folds", dataset == "folder"),
                                                ("--group-pattern", dataset == "folder"),
                                                ("--fold-column", dataset == "csv"))
                 if FLAGS[option[2:]].present and not applies]
    if misplaced:
        raise UsageError(f"{', '.join(misplaced)} cannot be used with {dataset}: --csv goes with csv, --raw-dir with "
                         "folder (or overrides DATA_DIR/<name>/raw of mtt, scd, dcs), --name with folder and csv, "
                         "--folds and --group-pattern with folder, --fold-column with csv")
    if flag("recipe") not in list_recipes():
        raise UsageError(f"--recipe {flag('recipe')} is not registered; choose from {', '.join(list_recipes())}")
    raw_dir = flag("csv") if dataset == "csv" else flag("raw-dir")
    if flag("dry-run"):
        try:
            name, raw_dir, index = index_dataset(dataset, data_dir=flag("data-dir"), raw_dir=raw_dir,
                                                 name=flag("name"), seed=flag("seed"), **custom)
        except (LayoutError, ValueError) as error:
            raise UsageError(str(error)) from None
        return report_index(name, raw_dir, index)
    line = ProgressLine()

    def progress(p):
        line(f"{dataset}: shards {p.shards_done}/{p.shards_total}  clips {p.clips_done}/{p.clips_total}  "
             f"{p.clips_per_second:.0f} clips/s  ETA {format_seconds(p.eta_seconds)}",
             final=p.shards_done == p.shards_total)

    try:
        manifest = build_dataset(dataset, data_dir=flag("data-dir"), raw_dir=raw_dir, name=flag("name"),
                                 workers=flag("workers"), sample_dtype=flag("sample-dtype"),
                                 overwrite=flag("overwrite"), seed=flag("seed"), progress=progress,
                                 min_seconds=flag("min-seconds"), recipe=flag("recipe"), verify=flag("verify"),
                                 **custom)
    except (LayoutError, ValueError, BuildLocked) as error:
        raise UsageError(str(error)) from None
    return report(manifest)


def print_failures(failures, what):
    if failures:
        print(f"{len(failures)} {what}, e.g.:")
        for failure in failures[:FAILURES_SHOWN]:
            print(f"  {failure['path']}: {failure['error']}")


def report_index(name, raw_dir, index):
    """Prints what a dry run found in the raw layout."""
    print(f"{name}: {len(index.clips)} clips with audio in {raw_dir} (dry run: nothing decoded or written)")
    for note in index.notes:
        print(f"note: {note}")
    for split in index.splits:
        print(f"{split:>5}: {sum(clip.split == split for clip in index.clips)} clips")
    print(f"{index.spec.num_classes} classes: {', '.join(index.spec.classes)}")
    print_failures(index.failures, "failure(s) found before decoding (listed files without audio, unlisted files)")
    if not index.failures:
        print("no failures found before decoding")
    return 0


def resume_hint(interrupt):
    return "finished shards are kept: run the same command again to resume"


def report(manifest):
    """Prints the summary; non-zero exit when a split ended up with no clips."""
    for note in manifest["notes"]:
        print(f"note: {note}")
    for repair in manifest["repaired"]:
        print(f"rebuilt {repair['shard']}: it was {repair['problem']}")
    for split, entry in manifest["splits"].items():
        print(f"{split:>5}: {entry['clips']} clips, {entry['segments']} segments, {len(entry['shards'])} shards")
    if manifest.get("folds"):
        print(f"a fold set of {len(manifest['folds'])} folds ({', '.join(manifest['folds'])}): train it with "
              f"`python train.py {manifest['dataset']} --cv` (or --fold K, K from 0)")
    print(f"{'mean of all folds' if manifest.get('folds') else 'train mean'} {manifest['mean']:.6f}, "
          f"std {manifest['std']:.6f}")
    print_failures(manifest["failures"], "clip(s) skipped (listed in manifest.json 'failures')")
    empty = [split for split, entry in manifest["splits"].items() if entry["clips"] == 0]
    if empty:
        print(f"error: no clip was written for split(s) {', '.join(empty)}")
        return 1
    return 0


def run_cli():
    run(__name__)
