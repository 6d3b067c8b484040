"""A module handle that pickles as the recipe that builds it, not as its weights.

A fitted :class:`~skh2t.features.IntermediateFeatureTransformer` keeps its
backbone, and a fitted :class:`~skh2t.finetune.FineTuneClassifier` its
network, in a :class:`LazyModule`: the live module while it is in memory, and
in a pickle (a saved model, a joblib worker's copy) only what rebuilds it:
the recipe, plus the weights where the recipe does not give them. The module
is rebuilt, on the CPU, the first time it is needed after loading.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from skh2t.features.backbones import on_cpu, structure_fingerprint, weights_fingerprint

__all__ = ["LazyModule", "ModuleRecipe", "cpu_state"]


class ModuleRecipe(Protocol):
    """What a :class:`LazyModule` rebuilds its module from (it must pickle small).

    ``fingerprint`` is the :func:`~skh2t.features.backbones.weights_fingerprint`
    of the weights :meth:`build` gives, or ``""`` when the weights are not part
    of the recipe (then a pickle always stores them).
    :class:`~skh2t.features.BackboneReference` is one.
    """

    @property
    def fingerprint(self) -> str: ...

    def build(self) -> nn.Module: ...


class LazyModule:
    """A module, or the recipe that rebuilds it on first use.

    Parameters
    ----------
    module : torch.nn.Module or None
        The live module; ``None``: built from ``recipe`` (and ``state``) on first use.
    recipe : ModuleRecipe or None, default=None
        How to build the module again; ``None``: it cannot be rebuilt, and a
        pickle stores it whole, on the CPU.
    state : dict of str to torch.Tensor, default=None
        Weights loaded into the module the recipe builds (those the recipe does not give).

    Notes
    -----
    A pickle of a handle with a recipe stores the recipe, and the module's
    ``state_dict`` (on the CPU) only when its weights differ from those the
    recipe gives (weights changed after the handle was made, or a recipe that
    gives none). A module whose structure changed since the handle was made
    (:func:`~skh2t.features.backbones.structure_fingerprint`: a setting such
    as a BatchNorm's ``eps``, a submodule replaced), which the recipe cannot
    rebuild, is stored whole, on the CPU. What the fingerprint leaves out (a
    ``forward`` replaced on an instance, attributes that are not plain
    settings) is lost in a pickle of a rebuildable module.

    Examples
    --------
    >>> from skh2t.features import load_backbone
    >>> import pickle
    >>> loaded = load_backbone("test_resnet", weights=None)
    >>> handle = LazyModule(loaded.model, loaded.reference)
    >>> copy = pickle.loads(pickle.dumps(handle))
    >>> copy.is_built, type(copy.module).__name__, copy.is_built
    (False, 'ResNet', True)
    """

    def __init__(
        self,
        module: nn.Module | None,
        recipe: ModuleRecipe | None = None,
        *,
        state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        if module is None and recipe is None:
            raise ValueError("A LazyModule needs a module or a recipe to build one.")
        self._module = module
        self.recipe = recipe
        self._state = state
        # The structure the recipe builds: a module that no longer has it is pickled whole.
        self._structure = structure_fingerprint(module) if module is not None else None

    @property
    def is_built(self) -> bool:
        """Whether the module is in memory (else the next :attr:`module` builds it)."""
        return self._module is not None

    @property
    def module(self) -> nn.Module:
        """The module, built from the recipe (on the CPU) if it is not in memory."""
        if self._module is None:
            module = self.recipe.build()
            if self._state is not None:
                module.load_state_dict(self._state)
            self._module, self._state = module, None
            if self._structure is None:
                self._structure = structure_fingerprint(module)
        return self._module

    def on_cpu(self) -> LazyModule:
        """This handle if its module (if built) is on the CPU, else one with a CPU copy."""
        if self._module is None:
            return self
        module = on_cpu(self._module)
        if module is self._module:
            return self
        copy = LazyModule(module, self.recipe)
        copy._structure = self._structure
        return copy

    def __getstate__(self) -> dict[str, Any]:
        state = {"module": None, "recipe": self.recipe, "state": None, "structure": None}
        if self._module is None:
            return {**state, "state": self._state, "structure": self._structure}
        structure = structure_fingerprint(self._module)
        if self.recipe is None or structure != self._structure:  # cannot be rebuilt
            return {**state, "module": on_cpu(self._module), "structure": self._structure}
        fingerprint = self.recipe.fingerprint
        if not fingerprint or weights_fingerprint(self._module) != fingerprint:
            state["state"] = cpu_state(self._module)
        return {**state, "structure": structure}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._module = state["module"]
        self.recipe = state["recipe"]
        self._state = state["state"]
        self._structure = state.get("structure")

    def __repr__(self) -> str:
        what = type(self._module).__name__ if self._module is not None else "not built"
        return f"LazyModule({what}, recipe={self.recipe!r})"


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``module``'s state dict on the CPU.

    Examples
    --------
    >>> sorted(cpu_state(nn.Linear(2, 3)))
    ['bias', 'weight']
    """
    return {name: t.detach().to("cpu", copy=True) for name, t in module.state_dict().items()}
