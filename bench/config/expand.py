"""From checked options to a plan: the product of the options, in the order the runner measures it."""

from __future__ import annotations

import itertools

from bench.config.options import OPTIONS, check_image_fits, expand_models, parse_frameworks, resolve_device
from bench.config.types import LAYOUTS, MODES, PRECISIONS, Config, Plan, Settings, UsageError
from implementations import FRAMEWORKS, get_spec, list_models
from implementations.specs import check_image_size

DEFAULTS = dict(
    compile=["off"], layouts=["auto"], device="auto", threads=0, warmup_steps=3, windows=6,
    min_window_s=0.5, max_window_steps=1000, timeout_s=600.0, tf32=True, torch_compile_mode="default", seed=0,
    max_batch=False, max_batch_limit=4096, explain=True,
)  # fmt: skip


def build_plan(options: dict, preset: str = "custom") -> Plan:
    """Check typed options (a preset's values overridden by the command line) and expand the product.

    Every value passes the option schema here, whatever its source, so a plan built from Python is held
    to the same rules as one from a preset file or the command line.
    """
    unknown = set(options) - set(OPTIONS)
    if unknown:
        raise UsageError(f"unknown options {sorted(unknown)}; valid: {', '.join(OPTIONS)}")
    for key, valid in (
        ("frameworks", ", ".join(FRAMEWORKS)),
        ("models", "names or globs from `python -m bench models`"),
        ("batch_sizes", "positive integers"),
        ("modes", ", ".join(MODES)),
        ("precisions", ", ".join(PRECISIONS)),
    ):
        if not options.get(key):
            raise UsageError(f"no {key.replace('_', ' ')} given; valid: {valid}")
    o = {name: OPTIONS[name].check(value, "") for name, value in {**DEFAULTS, **options}.items()}
    frameworks = parse_frameworks(o["frameworks"])
    models = expand_models(o["models"])
    batch_sizes = sorted(set(o["batch_sizes"]))
    modes, precisions = list(dict.fromkeys(o["modes"])), list(dict.fromkeys(o["precisions"]))
    compile_values, layouts = list(dict.fromkeys(o["compile"])), list(dict.fromkeys(o["layouts"]))
    image_size = o["image_size"]
    for name in models:
        try:
            check_image_size(get_spec(name), image_size)
        except ValueError as error:
            raise UsageError(str(error)) from None
    settings = Settings(
        warmup_steps=o["warmup_steps"],
        windows=o["windows"],
        min_window_s=o["min_window_s"],
        max_window_steps=o["max_window_steps"],
        threads=o["threads"],
        seed=o["seed"],
        tf32=o["tf32"],
        torch_compile_mode=o["torch_compile_mode"],
        timeout_s=o["timeout_s"],
        explain=o["explain"],
    )
    check_image_fits(image_size, max(batch_sizes), settings.inputs)
    device = resolve_device(o["device"])
    notes = []
    configs = []
    for framework, precision, compiled in itertools.product(frameworks, precisions, compile_values):
        if framework == "keras-jax" and compiled != "off":
            # Its step is always one jax.jit (XLA) call: "off", the engine's own execution, is already compiled.
            notes.append("keras-jax always runs jit-compiled (XLA): --compile on applies to torch and keras-tensorflow")
            continue
        engine_layouts = layouts if framework == "torch" else ["channels_last"]  # Keras models are NHWC only
        if framework != "torch" and set(layouts) - {"auto", "channels_last"}:
            notes.append(f"{framework} runs NHWC (channels_last) only: --layout applies to PyTorch")
        for layout, model, mode, batch in itertools.product(engine_layouts, models, modes, batch_sizes):
            configs.append(Config(framework, model, batch, mode, precision, compiled, layout, image_size, device))
    configs = order_configs(configs, interleave=device == "cpu")
    return Plan(
        tuple(configs),
        settings,
        preset=preset,
        notes=tuple(dict.fromkeys(notes)),
        max_batch=o["max_batch"],
        max_batch_limit=o["max_batch_limit"],
    )


def order_configs(configs: list[Config], interleave: bool) -> list[Config]:
    """Batch sizes ascend within a group (so an OOM can skip the larger ones).

    On a CPU the engines of a cell sit side by side: the runner prepares them together and alternates
    their timed windows, so slow drifts of a noisy machine hit all alike. On a GPU each framework's configurations run together and its worker is closed
    before the next framework starts: TensorFlow never returns device memory it has taken.
    """
    framework_rank = {name: i for i, name in enumerate(FRAMEWORKS)}
    model_rank = {name: i for i, name in enumerate(list_models())}

    layout_rank = {name: i for i, name in enumerate(LAYOUTS)}

    def key(c: Config) -> tuple:
        rest = (c.precision, c.compile, model_rank.get(c.model, len(model_rank)), c.model, c.mode)
        engine = (framework_rank[c.framework], layout_rank[c.layout])
        if interleave:  # the engines of a cell side by side
            return (*rest, c.batch_size, *engine)
        return (*engine, *rest, c.batch_size)

    return sorted(configs, key=key)
