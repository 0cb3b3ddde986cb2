"""The PyTorch side of a profile: stage timings, step split, operator categories and a trace."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from implementations import get_spec
from implementations.lowering import lower, stage_slices
from implementations.torch_models import torch_from_layers

from ..backends.torch_backend import LEARNING_RATE
from .categories import CATEGORIES, torch_category
from .gradients import gradient_flow as _gradient_flow
from .measure import profile_result, time_in_rounds

PROFILED_STEPS = 3  # steps under torch.profiler (after a warm one): categories are their mean


def _sync(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _stage_models(model, spec, size, classes, layout, device):
    """Each stage as its own GraphModule holding the whole model's weights (copied by name)."""
    whole = model.state_dict()
    stages = []
    for name, layers in stage_slices(lower(spec, size, classes)):
        stage = torch_from_layers(layers, f"{spec.name}_{name}", layout=layout).to(device)
        stage.load_state_dict({key: whole[key] for key in stage.state_dict()})
        stages.append((name, stage))
    return stages


def profile(request: dict) -> dict:
    device = torch.device(request["device"])
    sync = _sync(device)
    spec = get_spec(request["model"])
    size, batch, train = request["image_size"], request["batch_size"], request["mode"] == "train"
    layout = "channels_last" if device.type == "cuda" else "channels_first"
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    torch.manual_seed(request["seed"])
    model = torch_from_layers(lower(spec, size, spec.default_classes), spec.name, layout=layout).to(device)
    classes = spec.default_classes
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if request["precision"] == "bf16"
        else contextlib.nullcontext()
    )
    generator = torch.Generator(device="cpu").manual_seed(request["seed"])
    images = torch.randn(batch, 3, size, size, generator=generator).to(device, memory_format=memory_format)
    labels = torch.randint(0, classes, (batch,), generator=generator).to(device)
    stages = _stage_models(model, spec, size, classes, layout, device)
    model.train(train)
    for _, stage in stages:
        stage.train(train)

    # Each stage's real input: the previous stage's output on the same images; when training, a random
    # gradient of each stage's output shape stands for what the next stages send back (the head has its loss).
    inputs, upstream, x = [], [None] * len(stages), images
    with torch.no_grad(), autocast:
        for index, (_, stage) in enumerate(stages):
            inputs.append(x.detach())
            x = stage(x)
            if train and index < len(stages) - 1:
                upstream[index] = torch.randn(x.shape, generator=generator).to(device, x.dtype)

    functions, saved = {}, {}
    head = len(stages) - 1
    for index, (name, stage) in enumerate(stages):
        source = inputs[index].clone().requires_grad_(train and index > 0)
        if not train:

            def forward(stage=stage, source=source):
                with torch.inference_mode(), autocast:
                    return stage(source)

            functions[f"{name}/forward"] = forward
            continue

        def forward(stage=stage, source=source):
            with autocast:
                return stage(source)

        def forward_backward(stage=stage, source=source, gradient=upstream[index], last=index == head):
            stage.zero_grad(set_to_none=True)
            source.grad = None
            with autocast:
                out = stage(source)
            if last:
                F.cross_entropy(out.float(), labels).backward()
            else:
                out.backward(gradient)

        functions[f"{name}/forward"] = forward
        functions[f"{name}/forward_backward"] = forward_backward
        saved[name] = _saved_bytes(stage, source)

    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=0.9)

    def whole_forward():
        if not train:
            with torch.inference_mode(), autocast:
                return model(images)
        with autocast:
            return F.cross_entropy(model(images).float(), labels)

    def whole_forward_backward():
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()

    def whole_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = F.cross_entropy(model(images).float(), labels)
        loss.backward()
        optimizer.step()

    functions["whole/forward"] = whole_forward
    if train:
        functions["whole/forward_backward"] = whole_forward_backward
        functions["whole/step"] = whole_step
        # The optimizer alone, on copies of the weights holding real gradients: applying the same
        # gradients again and again to the model itself would walk its weights away.
        whole_forward_backward()
        copies = [p.detach().clone().requires_grad_() for p in model.parameters()]
        for copy, p in zip(copies, model.parameters()):
            copy.grad = p.grad.detach().clone()
        apart = torch.optim.SGD(copies, lr=LEARNING_RATE, momentum=0.9)
        functions["whole/optimizer"] = apart.step

    timed = time_in_rounds(functions, sync, windows=request["windows"], min_window_s=request["min_window_s"])
    result = profile_result("torch", layout, timed, [name for name, _ in stages], saved)
    if request["ops"] or request["trace"]:
        result.update(_operator_profile(stages, labels, train, autocast, images, sync, request))
    return result


def _saved_bytes(stage, source) -> int:
    """Bytes autograd keeps for the backward of one forward of `stage` (saved-tensor hooks), weights excluded."""
    weights = {p.data_ptr() for p in stage.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in weights:
            storages[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        stage(source)
    return sum(storages.values())


def _operator_profile(stages, labels, train, autocast, images, sync, request) -> dict:
    """torch.profiler over PROFILED_STEPS steps of the stage-by-stage model (the same layers and weights
    as the whole model), each stage under a record_function label; self time per category per step."""
    from torch.profiler import ProfilerActivity, profile, record_function

    parameters = [p for _, stage in stages for p in stage.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=LEARNING_RATE, momentum=0.9) if train else None

    def step():
        x = images
        context = contextlib.nullcontext() if train else torch.inference_mode()
        with context:
            if optimizer:
                optimizer.zero_grad(set_to_none=True)
            with record_function("forward"):
                for name, stage in stages:
                    with record_function(f"stage {name}"), autocast:
                        x = stage(x)
            if train:
                loss = F.cross_entropy(x.float(), labels)
                with record_function("backward"):
                    loss.backward()
                with record_function("optimizer"):
                    optimizer.step()
        sync()

    step()  # warm: the first step allocates
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if images.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(PROFILED_STEPS):
            step()
    result = {}
    if request["trace"]:
        path = Path(request["out"]) / "torch_trace.json"
        prof.export_chrome_trace(str(path))
        result["trace"] = path.name
    if request["ops"]:
        result["categories"] = _categories(prof, images.device.type == "cuda")
        result["profiled_steps"] = PROFILED_STEPS
    return result


def _categories(prof, gpu: bool) -> dict[str, float]:
    """Seconds per step in each category: self time of every ATen op (device time on a GPU)."""
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
        totals[torch_category(event.name, tuple(ancestors))] += self_us / 1e6 / PROFILED_STEPS
    return totals


def gradient_flow(request: dict) -> dict:
    return _gradient_flow(request, "torch")
