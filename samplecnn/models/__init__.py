"""SampleCNN model zoo: the builder, its config, and the block registry."""
from samplecnn.models.blocks import get_block, list_blocks, register_block
from samplecnn.models.initializers import FanInUniform, SquaredFanInUniform
from samplecnn.models.samplecnn import (
    EMBEDDING_LAYER,
    ModelConfig,
    block_filters,
    build_samplecnn,
)

__all__ = [
    "EMBEDDING_LAYER",
    "FanInUniform",
    "ModelConfig",
    "block_filters",
    "build_samplecnn",
    "get_block",
    "list_blocks",
    "register_block",
    "SquaredFanInUniform",
]
