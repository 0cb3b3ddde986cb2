"""What to measure: frozen configurations, measurement settings, named presets and one option schema.

Everything here is plain data and importable without torch or TensorFlow. Validation happens at the
edge (CLI, preset files) and raises UsageError with what was received and what is valid.

- types: the data (Config, Settings, Plan, the valid choices, UsageError)
- options: the option schema and the checks behind it
- presets: the embedded sweeps and preset files
- expand: options to a Plan, ordered for the runner
"""

from bench.config.expand import DEFAULTS, build_plan, order_configs
from bench.config.options import (
    MAX_BATCH_SIZE,
    MAX_IMAGE_SIZE,
    OPTIONS,
    Option,
    check_image_fits,
    check_output_dir,
    expand_models,
    input_memory_bytes,
    parse_frameworks,
    physical_memory_bytes,
    resolve_device,
)
from bench.config.presets import IMAGENET_MODELS, PRESETS, default_preset_name, detect_gpu, load_preset
from bench.config.types import (
    COMPILE,
    DEVICES,
    LAYOUTS,
    MODES,
    PRECISIONS,
    TORCH_COMPILE_MODES,
    Config,
    Plan,
    Settings,
    UsageError,
)

__all__ = [
    "COMPILE", "DEFAULTS", "DEVICES", "IMAGENET_MODELS", "LAYOUTS", "MAX_BATCH_SIZE", "MAX_IMAGE_SIZE", "MODES",
    "OPTIONS", "PRECISIONS", "PRESETS", "TORCH_COMPILE_MODES", "Config", "Option", "Plan", "Settings", "UsageError",
    "build_plan", "check_image_fits", "check_output_dir", "default_preset_name", "detect_gpu", "expand_models",
    "input_memory_bytes", "load_preset", "order_configs", "parse_frameworks", "physical_memory_bytes",
    "resolve_device",
]  # fmt: skip
