"""SampleCNN model zoo: the builder, its config, the block registry and the layers blocks use."""
from samplecnn.models.blocks import PluginError, block_module, get_block, import_module, list_blocks, register_block
from samplecnn.models.initializers import FanInUniform, SquaredFanInUniform
from samplecnn.models.layers import BatchNormalization, Conv1D
from samplecnn.models.samplecnn import (
    EMBEDDING_LAYER,
    HEAD_LAYERS,
    ModelConfig,
    block_filters,
    build_samplecnn,
)

__all__ = [
    "BatchNormalization",
    "Conv1D",
    "EMBEDDING_LAYER",
    "HEAD_LAYERS",
    "FanInUniform",
    "ModelConfig",
    "PluginError",
    "block_filters",
    "block_module",
    "build_samplecnn",
    "get_block",
    "import_module",
    "list_blocks",
    "register_block",
    "SquaredFanInUniform",
]
