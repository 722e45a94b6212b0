"""The training methods, in one table: each one's name, table title, network, loss terms and outputs.

Pure data, no torch: the command line lists the methods in its help, and TrainConfig checks its input
size against them. The networks (feratt.training.models) declare the same outputs and input multiple,
and the tests hold the two declarations together.
"""

from __future__ import annotations

from dataclasses import dataclass

from feratt.errors import FerattError

#: FERAtt's input sides are multiples of this: G_att's U-Net halves its input six times.
FERATT_MULTIPLE = 64
#: Every network's input side is a multiple of this: the classifier sees the input pooled to 32x32.
BASE_MULTIPLE = 32

#: The ModelOutput fields each network's forward fills.
BASELINE_OUTPUTS = frozenset({"logits"})
FERATT_OUTPUTS = frozenset({"logits", "embedding", "attention_image", "attention_map", "features"})

#: The method the Bonferroni-Dunn test compares the others with, when an experiment trains it.
CONTROL_METHOD = "baseline"


@dataclass(frozen=True)
class Method:
    """A training method: its network, with what that gives and needs, and the loss terms it optimises."""

    name: str
    title: str
    model: str
    terms: tuple[str, ...]
    outputs: frozenset[str] = BASELINE_OUTPUTS  # the ModelOutput fields the network's forward fills
    input_multiple: int = BASE_MULTIPLE  # the network's input side (in_size) is a multiple of this
    input_reason: str = ""  # why the input multiple, for the message that refuses an input size

    @property
    def attention(self) -> bool:
        """Whether the method's network gives an attention image I_att."""
        return "attention_image" in self.outputs


def _feratt(name: str, title: str, terms: tuple[str, ...]) -> Method:
    """A method that trains FERAtt."""
    reason = "G_att's U-Net halves its input six times"
    return Method(name, title, "feratt", terms, FERATT_OUTPUTS, FERATT_MULTIPLE, reason)


METHODS: dict[str, Method] = {
    method.name: method
    for method in (
        Method("baseline", "PreActResNet18", "baseline", ("classification",)),
        _feratt("feratt-cls", "FERAtt+Cls", ("attention", "classification")),
        _feratt("feratt-rep-cls", "FERAtt+Rep+Cls", ("attention", "representation", "classification")),
    )
}


def get_method(name: str) -> Method:
    """The method called `name`."""
    if name not in METHODS:
        raise FerattError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}", field="method")
    return METHODS[name]
