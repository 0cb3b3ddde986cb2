"""Published figures the models must match, and independent counts where none are published.

ImageNet rows: torchvision's model documentation (trainable parameters; "GFLOPS", which are GMACs, at
224 px). CIFAR rows: He et al. 2015, section 4.2 (exact counts of that architecture with option-A
shortcuts, BN scale and shift included; MMACs at 32 px). Both are copied in the project's REFERENCE.md.
"""

IMAGENET = {
    "vgg11": (132_863_336, 7.61),
    "vgg11_bn": (132_868_840, 7.61),
    "vgg13": (133_047_848, 11.31),
    "vgg13_bn": (133_053_736, 11.31),
    "vgg16": (138_357_544, 15.47),
    "vgg16_bn": (138_365_992, 15.47),
    "vgg19": (143_667_240, 19.63),
    "vgg19_bn": (143_678_248, 19.63),
    "resnet18": (11_689_512, 1.81),
    "resnet34": (21_797_672, 3.66),
    "resnet50": (25_557_032, 4.09),
    "resnet101": (44_549_160, 7.80),
    "resnet152": (60_192_808, 11.51),
}

CIFAR = {
    20: (269_722, 40.6),
    32: (464_154, 68.9),
    44: (658_586, 97.2),
    56: (853_018, 125.5),
    110: (1_727_962, 252.9),
    1202: (19_421_274, 2829.2),
}


# The 5x5 VGG variants have no published figures: their counts come from this hand-written formula over
# Table 1 of Simonyan & Zisserman (width and number of 3x3 convolutions per block), in which each pair of
# 3x3 convolutions of a block is one 5x5 and a leftover single 3x3 stays. 224 px, 1000 classes.
VGG_BLOCKS = {
    11: ((64, 1), (128, 1), (256, 2), (512, 2), (512, 2)),
    13: ((64, 2), (128, 2), (256, 2), (512, 2), (512, 2)),
    16: ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    19: ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}


def vgg_5x5_counts(depth: int) -> tuple[int, int]:
    """(parameters, MACs) of vgg{depth}_5x5 at 224 px."""
    params = macs = 0
    c_in, side = 3, 224
    for width, convs in VGG_BLOCKS[depth]:
        kernels = [5] * (convs // 2) + [3] * (convs % 2)
        for k in kernels:
            params += k * k * c_in * width + width  # weights + bias
            macs += k * k * c_in * width * side * side  # 'same' padding: the side is kept
            c_in = width
        side //= 2
    head = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]
    params += sum(n_in * n_out + n_out for n_in, n_out in head)
    macs += sum(n_in * n_out for n_in, n_out in head)
    return params, macs


# The BN-free CIFAR variants have no published figures: the published counts less BatchNorm's scale and
# shift, 2 x (16 stem channels + 2 per block x n blocks x (16 + 32 + 64) channels). MACs are unchanged.
CIFAR_NOBN = (20, 56, 110)


def cifar_nobn_params(depth: int) -> int:
    n = (depth - 2) // 6
    return CIFAR[depth][0] - 2 * (16 + 2 * n * (16 + 32 + 64))


def expected_params() -> dict[str, int]:
    table = {name: params for name, (params, _) in IMAGENET.items()}
    table.update({f"vgg{depth}_5x5": vgg_5x5_counts(depth)[0] for depth in VGG_BLOCKS})
    for depth, (params, _) in CIFAR.items():
        table[f"resnet{depth}_cifar"] = params
        table[f"plain{depth}_cifar"] = params  # the plain twin drops only parameter-free shortcuts
    for depth in CIFAR_NOBN:
        table[f"resnet{depth}_cifar_nobn"] = table[f"plain{depth}_cifar_nobn"] = cifar_nobn_params(depth)
    return table


def expected_macs() -> dict[str, tuple[float, float]]:
    """name -> (MACs, absolute tolerance of the published rounding)."""
    table = {name: (gmacs * 1e9, 0.005e9) for name, (_, gmacs) in IMAGENET.items()}
    table.update({f"vgg{depth}_5x5": (vgg_5x5_counts(depth)[1], 0) for depth in VGG_BLOCKS})
    for depth, (_, mmacs) in CIFAR.items():
        for prefix in ("resnet", "plain"):
            table[f"{prefix}{depth}_cifar"] = (mmacs * 1e6, 0.05e6)
            if depth in CIFAR_NOBN:
                table[f"{prefix}{depth}_cifar_nobn"] = (mmacs * 1e6, 0.05e6)
    return table
