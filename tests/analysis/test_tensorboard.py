"""train.py --tensorboard-images: one validation picture per epoch in TensorBoard."""
import tensorflow as tf

from scripts import SMALL_MODEL, run_script


def image_steps(folder, tag):
    steps = []
    for events in sorted(folder.rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                if value.tag == tag:
                    image = tf.image.decode_png(tf.make_ndarray(value.tensor)[2])
                    assert image.shape[0] > 100 and image.shape[1] > 100
                    steps.append(event.step)
    return steps


def test_confusion_matrix_image_after_every_epoch(tones, tmp_path):
    result = run_script("train.py", "tones", "--data-dir", tones, "--log-dir", tmp_path, "--num-stages", "1",
                        "--max-epochs", "2", "--patience", "2", "--tensorboard-images", *SMALL_MODEL)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = tmp_path.iterdir()
    assert image_steps(run_dir / "tensorboard" / "images", "val_confusion_matrix") == [1, 2]
