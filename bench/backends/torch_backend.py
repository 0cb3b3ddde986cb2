"""PyTorch backend: eager or torch.compile, autocast for bf16/fp16, channels_last or NCHW.

A built model is kept for the next configuration of the same model, size and compile setting (batch
sizes and modes of one model follow each other in a plan), so it is built once per worker; its
optimizer is made fresh for each configuration."""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from bench.backends import MallocBacked, Prepared, StepHook, Wrap, is_allocation_failure
from bench.backends.recipe import MOMENTUM, learning_rate
from bench.config import Config, Settings
from implementations import build, count_params

_FORMATS = {"channels_last": torch.channels_last, "channels_first": torch.contiguous_format}


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_HALF = set(_DTYPES.values())


def make_optimizer(parameters, scale: float = 1.0) -> torch.optim.Optimizer:
    """The recipe's SGD with momentum (recipe.py) over `parameters`."""
    return torch.optim.SGD(parameters, lr=learning_rate(scale), momentum=MOMENTUM)


def loss_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The recipe's cross-entropy; half-precision logits are taken in float32 (never a downcast of float64)."""
    return F.cross_entropy(logits.float() if logits.dtype in _HALF else logits, labels)


def _no_sync() -> None:
    pass


def _device_uuid(device: torch.device) -> str | None:
    """The CUDA device's UUID (NVML reads the same device by it), where this PyTorch reports one."""
    if device.type != "cuda":
        return None
    uuid = getattr(torch.cuda.get_device_properties(device), "uuid", None)
    return str(uuid) if uuid is not None else None


def set_tf32(enabled: bool) -> dict:
    """TF32 for float32 matmuls and convolutions, on or off, through PyTorch's fp32_precision settings where
    they exist (the allow_tf32 flags are deprecated there) and the allow_tf32 flags otherwise; what was set.

    The deprecated flags are set to the same value first: PyTorch raises when code still reading them (Inductor's
    convolution templates do, in torch 2.13) finds them disagreeing with fp32_precision."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        value = "tf32" if enabled else "ieee"
        matmul.fp32_precision = value
        conv.fp32_precision = value
        return {
            "tf32_api": "fp32_precision",
            "tf32_matmul": matmul.fp32_precision == "tf32",
            "tf32_cudnn": conv.fp32_precision == "tf32",
        }
    return {
        "tf32_api": "allow_tf32",
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
    }


def operator_seconds(prof, gpu: bool, steps: int) -> dict[str, float]:
    """Seconds per step in each operator category (profiling/categories.py) from a torch.profiler run over
    `steps` steps: the self time of every ATen op (device time on a GPU); record_function labels left out."""
    from bench.backends.categories import CATEGORIES, torch_category

    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CPU:  # kernels: counted in their op's device time
            continue
        self_us = event.self_device_time_total if gpu else event.self_cpu_time_total
        if not self_us or event.name.startswith(("forward", "backward", "optimizer", "stage ", "ProfilerStep")):
            continue
        ancestors, parent = [], event.cpu_parent
        while parent is not None:
            ancestors.append(parent.name)
            parent = parent.cpu_parent
        if not event.name.startswith(("aten::", "Optimizer.")) and not ancestors:
            continue
        totals[torch_category(event.name, tuple(ancestors))] += self_us / 1e6 / steps
    return totals


class TorchBackend(MallocBacked):
    name = "torch"

    def __init__(self):
        self._cached = None  # (key, model, runnable) of the last model built

    def setup_process(self, settings: Settings) -> dict:
        threads = settings.resolved_threads()
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # allowed once per process, before parallel work
            torch.set_num_interop_threads(1)
        # Training on a fixed batch drives gradients into subnormals, which made PyTorch 10-40x slower
        # on our CPU while TensorFlow flushes them: flush here too.
        flush = torch.set_flush_denormal(True)
        tf32 = set_tf32(settings.tf32)
        torch.backends.cudnn.benchmark = True  # autotuning happens in the excluded first steps
        env = {
            "framework_version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "flush_denormal": bool(flush),
            **tf32,
            "cudnn_benchmark": True,
            "cuda_available": torch.cuda.is_available(),
        }
        if torch.cuda.is_available():
            env.update(
                cuda_version=torch.version.cuda,
                cudnn_version=torch.backends.cudnn.version(),
                device_name=torch.cuda.get_device_name(0),
            )
        return env

    def warm_framework(self) -> None:
        """A tiny convolution forward, backward and SGD step, so the framework's lazy start-up is paid
        before any configuration's memory is measured (the first optimizer imports torch._dynamo: 70 MiB)."""
        weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3))
        optimizer = make_optimizer([weight])
        F.conv2d(torch.randn(2, 3, 8, 8, requires_grad=True), weight).sum().backward()
        optimizer.step()

    def warm_profiler(self) -> None:
        """One tiny step under torch.profiler, so the profiler's lasting start-up memory (Kineto's state) is in
        the worker's baseline, not in the peak of the configuration measured after the first explain pass."""
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]):
            self.warm_framework()

    def device(self, config: Config) -> torch.device:
        if config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch.cuda.is_available() is False")
        return torch.device(config.device)

    @staticmethod
    def _key(config: Config, settings: Settings) -> tuple:
        return (config.model, config.image_size, config.compile, config.device, settings.seed)

    def drop_other(self, config: Config, settings: Settings) -> None:
        """Free a kept model that `config` will not reuse (before its memory is measured)."""
        if self._cached is not None and self._cached[0] != self._key(config, settings):
            self.release()

    def _model(self, config: Config, settings: Settings, hook: StepHook | None, wrap: Wrap | None = None):
        key = self._key(config, settings)
        if hook is None and wrap is None and self._cached is not None and self._cached[0] == key:
            model = self._cached[1]
            for parameter in model.parameters():  # the last training step's gradients: not this one's memory
                parameter.grad = None
            return model, self._cached[2]
        self.release()
        torch.manual_seed(settings.seed)
        options: dict[str, Any] = {"dropout": hook.dropout} if hook else {}
        model = build(config.model, "torch", image_size=config.image_size, **options).to(self.device(config))
        if hook is not None and hook.dtype == "float64":
            model = model.double()
        wrapped = wrap(model) if wrap is not None else model  # the step runs the wrapped module
        runnable = torch.compile(wrapped, mode=settings.torch_compile_mode) if config.compile == "on" else wrapped
        if hook is None and wrap is None:
            self._cached = (key, model, runnable)
        return model, runnable

    def prepare(
        self, config: Config, settings: Settings, hook: StepHook | None = None, wrap: Wrap | None = None
    ) -> Prepared:
        device = self.device(config)
        model, runnable = self._model(config, settings, hook, wrap)
        layout = "channels_first" if config.layout == "auto" else config.layout
        params = count_params(model)
        num_classes = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1].out_features
        if hook is not None:
            dtype = torch.float64 if hook.dtype == "float64" else torch.float32
            images = [torch.as_tensor(x, dtype=dtype) for x in hook.inputs]
            targets = [torch.as_tensor(y, dtype=torch.long) for y in hook.labels]
        else:
            generator = torch.Generator(device="cpu").manual_seed(settings.seed)
            shape = (config.batch_size, 3, config.image_size, config.image_size)
            images = [torch.randn(shape, generator=generator) for _ in range(settings.inputs)]
            targets = [torch.randint(0, num_classes, (config.batch_size,), generator=generator) for _ in images]
        images = [x.to(device) for x in images]
        labels = [y.to(device) for y in targets]
        inputs: list[torch.Tensor] = []
        autocast = (
            torch.autocast(device.type, dtype=_DTYPES[config.precision])
            if config.precision in _DTYPES
            else contextlib.nullcontext()
        )
        counter = [0]
        optimizer = None
        if config.mode == "train":
            model.train()
            optimizer = make_optimizer(model.parameters())
            scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None

            def step():
                i = counter[0] % len(inputs)
                counter[0] += 1
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    logits = runnable(inputs[i])
                    loss = loss_of(logits, labels[i])
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                return loss

        else:
            model.eval()

            def step():
                i = counter[0] % len(inputs)
                counter[0] += 1
                with torch.inference_mode(), autocast:
                    return runnable(inputs[i])

        prepared = Prepared(
            step=step,
            sync=torch.cuda.synchronize if device.type == "cuda" else _no_sync,  # CPU ops are synchronous
            params=params,
            device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            device_uuid=_device_uuid(device),
            model=model,
            layout=layout,
            handle=(runnable, inputs, optimizer),
        )

        def set_layout(name: str) -> None:
            """Switch the model, its momentum buffers and the inputs to another memory format, in place
            (the parameters stay the same objects, so the optimizer keeps them)."""
            memory_format = _FORMATS[name]
            model.to(memory_format=memory_format)
            if optimizer is not None:
                for state in optimizer.state.values():
                    buffer = state.get("momentum_buffer")
                    if buffer is not None and buffer.dim() == 4:
                        state["momentum_buffer"] = buffer.contiguous(memory_format=memory_format)
            inputs[:] = [x.contiguous(memory_format=memory_format) for x in images]
            prepared.layout = name

        def feed(x, y) -> None:
            images[:] = [torch.as_tensor(x, dtype=images[0].dtype).to(device)]
            labels[:] = [torch.as_tensor(y, dtype=torch.long).to(device)]
            inputs[:] = [images[0].contiguous(memory_format=_FORMATS[prepared.layout])]
            counter[0] = 0

        set_layout(layout)
        prepared.set_layout = set_layout if hook is None else None
        prepared.feed = feed if hook is not None else None
        return prepared

    def operator_categories(self, prepared: Prepared, config: Config, steps: int) -> dict:
        """The prepared step's time per operator category over `steps` steps under torch.profiler, and their mean
        wall time under it (the caller has run the step warm before)."""
        from torch.profiler import ProfilerActivity, profile

        cuda = config.device == "cuda"
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            for _ in range(steps):
                prepared.step()
                prepared.sync()
            wall = (time.perf_counter() - started) / steps
        return {"categories": operator_seconds(prof, cuda, steps), "profiled_steps": steps, "profiled_step_s": wall}

    def reset_peak_memory(self, config: Config) -> None:
        if config.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        if config.device == "cuda":
            return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return None, None

    def release(self) -> None:
        self._cached = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if "torch._dynamo" in sys.modules:  # only after torch.compile: touching it imports it (seconds)
            torch._dynamo.reset()

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        return isinstance(error, torch.cuda.OutOfMemoryError) or is_allocation_failure(error)
