"""A model's classifier sized to the data's classes, drawn for the training repeat (the finetune stage's first step)."""
from __future__ import annotations

import torch
from torch import nn

from elimnet.compress.elim import set_num_classes
from elimnet.models.staged import linears


def with_classes(model, config: dict, num_classes: int, seed: int, repeat: int = 0):
    """The model to finetune in repeat `repeat`, whose training seed is `seed`.

    The baseline starts from the 1000-class pretrained file: it gets this data's classifier, drawn with
    `seed`. The candidate comes sized by compress (one file for every repeat): from repeat 1 on, its fresh
    layers are drawn again with `seed`, so that its repeats, like the baseline's, differ in the init; repeat
    0 keeps compress's draw, so a one-repeat run trains exactly what it trained before repeats existed."""
    if config.get("num_classes") == num_classes:
        if repeat >= 1:
            redraw_fresh_layers(model, seed)
        return model, config
    torch.manual_seed(seed)  # same fresh classifier as compress's "full" model
    model, _ = set_num_classes(model, num_classes)
    config = {**config, "num_classes": num_classes,
              "steps": config.get("steps", []) + [{"name": "classifier", "spec": {"num_classes": num_classes}}]}
    return model, config


def fresh_layers(model) -> list[nn.Module]:
    """The layers of a compressed model that compress draws at random rather than takes from the pretrained
    file: the class layer (the classifier's last Linear, sized to the data's classes) and the ELimNet neck's
    conv. A deeper classifier's first Linear, redrawn by a cut only when its input width changes, is left
    alone: the model does not record whether it was."""
    neck = getattr(model, "neck", nn.Identity())
    return [linears(model.classifier)[-1]] + [m for m in neck.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def redraw_fresh_layers(model, seed: int) -> None:
    """Draw the fresh layers' weights (and biases) again, uniform over the range of their first draw.

    torch's default init is uniform in +-1/sqrt(fan_in); a layer that Diet or filter pruning sliced
    afterwards keeps the wider layer's range, which its largest |weight| recovers (within 1/n). Drawing
    from that range changes which init a repeat gets, never its scale."""
    g = torch.Generator().manual_seed(seed)
    for layer in fresh_layers(model):
        bound = float(layer.weight.abs().max())
        layer.weight.uniform_(-bound, bound, generator=g)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=g)
