"""PyTorch backend: eager or torch.compile, autocast for bf16/fp16, channels_last or NCHW."""

from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

from implementations import build, count_params

from ..config import Config, Settings
from ..timing import HostClock
from . import Prepared


class CudaEventClock:
    """Marks with CUDA events and synchronises once per window, so the queue never drains mid-window."""

    def start(self) -> None:
        self._events = [torch.cuda.Event(enable_timing=True)]
        self._events[0].record()

    def lap(self) -> None:
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        self._events.append(event)

    def stop(self) -> list[float]:
        self._events[-1].synchronize()
        return [a.elapsed_time(b) / 1e3 for a, b in zip(self._events, self._events[1:])]


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TorchBackend:
    name = "torch"

    def setup_process(self, settings: Settings) -> dict:
        threads = settings.resolved_threads()
        torch.set_num_threads(threads)
        with contextlib.suppress(RuntimeError):  # allowed once per process, before parallel work
            torch.set_num_interop_threads(1)
        # Training on a fixed batch drives gradients into subnormals, which made PyTorch 10-40x slower
        # on our CPU while TensorFlow flushes them: flush here too.
        flush = torch.set_flush_denormal(True)
        torch.backends.cuda.matmul.allow_tf32 = settings.tf32
        torch.backends.cudnn.allow_tf32 = settings.tf32
        torch.backends.cudnn.benchmark = True  # autotuning happens in the excluded first steps
        env = {
            "framework_version": torch.__version__,
            "intra_op_threads": torch.get_num_threads(),
            "inter_op_threads": torch.get_num_interop_threads(),
            "flush_denormal": bool(flush),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
            "tf32_cudnn": torch.backends.cudnn.allow_tf32,
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

    def device(self, config: Config) -> torch.device:
        if config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch.cuda.is_available() is False")
        return torch.device(config.device)

    def prepare(self, config: Config, settings: Settings) -> Prepared:
        device = self.device(config)
        torch.manual_seed(settings.seed)
        memory_format = torch.channels_last if config.layout == "channels_last" else torch.contiguous_format
        model = build(config.model, "torch", image_size=config.image_size, layout=config.layout).to(device)
        params = count_params(model)
        generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        shape = (config.batch_size, 3, config.image_size, config.image_size)
        num_classes = model.fc.out_features if hasattr(model, "fc") else model.classifier[-1].out_features
        inputs = [
            torch.randn(shape, generator=generator).to(device).contiguous(memory_format=memory_format)
            for _ in range(settings.inputs)
        ]
        labels = [torch.randint(0, num_classes, (config.batch_size,), generator=generator).to(device) for _ in inputs]
        runnable = model
        if config.compile == "on":
            runnable = torch.compile(model, mode=settings.torch_compile_mode)
        autocast = (
            torch.autocast(device.type, dtype=_DTYPES[config.precision])
            if config.precision in _DTYPES
            else contextlib.nullcontext()
        )
        counter = [0]
        if config.mode == "train":
            model.train()
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            scaler = torch.amp.GradScaler(device.type) if config.precision == "fp16" else None

            def step() -> None:
                i = counter[0] % len(inputs)
                counter[0] += 1
                optimizer.zero_grad(set_to_none=True)
                with autocast:
                    loss = F.cross_entropy(runnable(inputs[i]).float(), labels[i])
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()

        else:
            model.eval()

            def step() -> None:
                i = counter[0] % len(inputs)
                counter[0] += 1
                with torch.inference_mode(), autocast:
                    runnable(inputs[i])

        if device.type == "cuda":
            clock = CudaEventClock()
            name = torch.cuda.get_device_name(device)
        else:
            clock, name = HostClock(lambda: None), None  # CPU ops are synchronous
        return Prepared(step=step, clock=clock, params=params, device_name=name, handle=(model, runnable, inputs))

    def reset_peak_memory(self, config: Config) -> None:
        if config.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_memory(self, config: Config) -> tuple[int | None, str | None]:
        if config.device == "cuda":
            return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return None, None

    def release(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if "torch._dynamo" in sys.modules:  # only after torch.compile: touching it imports it (seconds)
            torch._dynamo.reset()

    @staticmethod
    def is_oom(error: BaseException) -> bool:
        if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
            return True
        text = str(error)
        return "out of memory" in text.lower() or "can't allocate memory" in text
