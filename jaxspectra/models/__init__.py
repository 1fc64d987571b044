"""jaxspectra.models: pure-function Flax transformers named after :mod:`jaxspectra.groups`.

``get_model(name, **overrides) -> (module, config)`` over :data:`MODEL_PRESETS`;
``param_count(params)``; ``lr_multipliers(config, params)`` (μP). See ``docs/architecture.md``.
"""

from jaxspectra.models.config import (
    EncoderConfig,
    GPTConfig,
    OneLayerConfig,
    TransformerConfig,
    ViTConfig,
)
from jaxspectra.models.encoder import CLSEncoder
from jaxspectra.models.gpt import GPT
from jaxspectra.models.mup import lr_multipliers
from jaxspectra.models.one_layer import OneLayerTransformer, fixed_w_c, one_layer_loss
from jaxspectra.models.presets import (
    MODEL_PRESETS,
    build_model,
    describe,
    example_input,
    expected_param_count,
    flops_per_token,
    get_model,
    param_count,
    param_shapes,
)
from jaxspectra.models.vit import ViT

__all__ = [
    "CLSEncoder",
    "EncoderConfig",
    "GPT",
    "GPTConfig",
    "MODEL_PRESETS",
    "OneLayerConfig",
    "OneLayerTransformer",
    "TransformerConfig",
    "ViT",
    "ViTConfig",
    "build_model",
    "describe",
    "example_input",
    "expected_param_count",
    "fixed_w_c",
    "flops_per_token",
    "get_model",
    "lr_multipliers",
    "one_layer_loss",
    "param_count",
    "param_shapes",
]
