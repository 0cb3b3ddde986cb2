"""The PyTorch side of a profile: stage timings, step split, operator categories and a trace."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from bench.backends.torch_backend import loss_of, make_optimizer, operator_seconds
from bench.studies.gradient_flow.gradients import gradient_flow as _gradient_flow
from bench.studies.gradient_flow.gradients import torch_model
from bench.studies.profiling.data import ProfileData, gradient_key, summary
from bench.studies.profiling.measure import profile_result, time_in_rounds
from implementations import get_spec
from implementations.lowering import lower, stage_slices
from implementations.torch_models import torch_from_layers

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
        if next(iter(whole.values())).dtype == torch.float64:
            stage.double()
        stages.append((name, stage))
    return stages


def stage_gradients(stage, source, gradient, labels, autocast):
    """One stage's forward and backward, the work its profile times: the stage's output, with the gradients
    of its parameters and, for every stage but the first, of its input (the network's input needs none).
    The head takes the recipe's loss; the others the upstream gradient."""
    stage.zero_grad(set_to_none=True)
    source.grad = None
    with autocast:
        out = stage(source)
    if gradient is None:
        loss_of(out, labels).backward()
    else:
        out.backward(gradient)
    return out


class _Setup:
    """The model, its stages, the data and each stage's real input and upstream gradient for one request."""

    def __init__(self, request: dict, float64: bool = False):
        self.device = torch.device(request["device"])
        spec = get_spec(request["model"])
        size, self.train = request["image_size"], request["mode"] == "train"
        self.layout = "channels_last" if self.device.type == "cuda" else "channels_first"
        memory_format = torch.channels_last if self.layout == "channels_last" else torch.contiguous_format
        classes = spec.default_classes
        torch.manual_seed(request["seed"])
        if float64:  # the equal-work check: the weights the Keras engines receive by transfer
            model = torch_model(spec.name, size, request["seed"]).double()
        else:
            model = torch_from_layers(lower(spec, size, classes), spec.name, layout=self.layout)
        self.model = model.to(self.device)
        self.autocast = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if request["precision"] == "bf16"
            else contextlib.nullcontext()
        )
        data = ProfileData(request, classes, np.float64 if float64 else np.float32)
        self.images = torch.from_numpy(data.images).to(self.device, memory_format=memory_format)
        self.labels = torch.from_numpy(data.labels).to(self.device)
        self.stages = _stage_models(self.model, spec, size, classes, self.layout, self.device)
        self.model.train(self.train)
        for _, stage in self.stages:
            stage.train(self.train)
        # Each stage's real input: the previous stage's output on the same images; when training, a random
        # gradient of each stage's output shape stands for what the next stages send back (the head has its loss).
        self.inputs, self.upstream, x = [], [None] * len(self.stages), self.images
        with torch.no_grad(), self.autocast:
            for index, (_, stage) in enumerate(self.stages):
                self.inputs.append(x.detach().clone().requires_grad_(self.train and index > 0))
                x = stage(x)
                if self.train and index < len(self.stages) - 1:
                    gradient = torch.from_numpy(data.upstream(tuple(x.shape)))
                    self.upstream[index] = gradient.to(self.device, x.dtype).contiguous(memory_format=memory_format)


def profile(request: dict, context=None) -> dict:
    setup = _Setup(request)
    sync, train, autocast, labels = _sync(setup.device), setup.train, setup.autocast, setup.labels
    functions, saved = {}, {}
    for index, (name, stage) in enumerate(setup.stages):
        source = setup.inputs[index]
        if not train:

            def forward(stage=stage, source=source):
                with torch.inference_mode(), autocast:
                    return stage(source)

            functions[f"{name}/forward"] = forward
            continue

        def forward(stage=stage, source=source):
            with autocast:
                return stage(source)

        def forward_backward(stage=stage, source=source, gradient=setup.upstream[index]):
            stage_gradients(stage, source, gradient, labels, autocast)

        functions[f"{name}/forward"] = forward
        functions[f"{name}/forward_backward"] = forward_backward
        saved[name] = _saved_bytes(stage, source)

    functions.update(_whole_functions(setup))
    timed = time_in_rounds(functions, sync, windows=request["windows"], min_window_s=request["min_window_s"])
    result = profile_result("torch", setup.layout, timed, [name for name, _ in setup.stages], saved)
    if request["ops"] or request["trace"]:
        result.update(_operator_profile(setup.stages, labels, train, autocast, setup.images, sync, request))
    return result


def _whole_functions(setup: _Setup) -> dict:
    """The whole model's forward (with the loss when training), forward+backward, step and optimizer alone."""
    model, images, labels, autocast = setup.model, setup.images, setup.labels, setup.autocast
    optimizer = make_optimizer(model.parameters())

    def whole_forward():
        if not setup.train:
            with torch.inference_mode(), autocast:
                return model(images)
        with autocast:
            return loss_of(model(images), labels)

    def whole_forward_backward():
        model.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of(model(images), labels)
        loss.backward()

    def whole_step():
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_of(model(images), labels)
        loss.backward()
        optimizer.step()

    if not setup.train:
        return {"whole/forward": whole_forward}
    # The optimizer alone, on copies of the weights holding real gradients: applying the same
    # gradients again and again to the model itself would walk its weights away.
    whole_forward_backward()
    copies = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for copy, p in zip(copies, model.parameters()):
        copy.grad = p.grad.detach().clone()
    return {
        "whole/forward": whole_forward,
        "whole/forward_backward": whole_forward_backward,
        "whole/step": whole_step,
        "whole/optimizer": make_optimizer(copies).step,
    }


def equal_work(request: dict, context=None) -> dict:
    """For the equal-work test: each stage's output and gradients, in float64, from PyTorch's seeded weights,
    for each model of request["models"]."""
    return {"engine": "torch", "models": {m: _equal_work(dict(request, model=m)) for m in request["models"]}}


def _equal_work(request: dict) -> dict:
    setup = _Setup(request, float64=True)
    stages = {}
    for index, (name, stage) in enumerate(setup.stages):
        out = stage_gradients(stage, setup.inputs[index], setup.upstream[index], setup.labels, setup.autocast)
        arrays = {"output": out.detach().numpy()}
        for parameter_name, parameter in stage.named_parameters():
            layer, kind = parameter_name.rsplit(".", 1)
            arrays[gradient_key(layer, kind)] = parameter.grad.numpy()
        if setup.inputs[index].grad is not None:
            arrays["input"] = setup.inputs[index].grad.numpy()
        stages[name] = summary(arrays)
    return stages


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
    optimizer = make_optimizer(parameters) if train else None

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
                loss = loss_of(x, labels)
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
        result["categories"] = operator_seconds(prof, images.device.type == "cuda", PROFILED_STEPS)
        result["profiled_steps"] = PROFILED_STEPS
    return result


def gradient_flow(request: dict, context=None) -> dict:
    return _gradient_flow(request, "torch")
