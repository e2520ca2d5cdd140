"""Data set specs carry the facts of DESIGN section 4."""
import pytest

from samplecnn.datasets import get_spec


@pytest.mark.parametrize("name,classes,first,last,segment,per_clip,blocks,task,threshold,per_shard", [
    ("mtt", 50, "choral", "guitar", 59049, 10, 9, "multilabel", 0.5, 100),
    ("scd", 35, "backward", "zero", 22050, 1, 8, "multiclass", None, 1000),
    ("dcs", 17, "Train horn", "Train", 22050, 10, 8, "multilabel", 0.1, 300),
])
def test_builtin_specs(name, classes, first, last, segment, per_clip, blocks, task, threshold, per_shard):
    spec = get_spec(name)
    assert spec.num_classes == classes and spec.classes[0] == first and spec.classes[-1] == last
    assert (spec.segment_samples, spec.segments_per_clip, spec.num_blocks) == (segment, per_clip, blocks)
    assert (spec.task, spec.threshold, spec.clips_per_shard, spec.sample_rate) == (task, threshold, per_shard, 22050)
    assert spec.segment_samples * spec.segments_per_clip <= spec.clip_samples


def test_unknown_spec_lists_the_known_ones():
    with pytest.raises(ValueError, match="dcs, mtt, scd"):
        get_spec("imagenet")


def test_spec_round_trips_through_a_dict():
    spec = get_spec("dcs")
    assert type(spec).from_dict(spec.to_dict()) == spec
