"""The contrastive task (``task = "contrastive"``): learn an embedding of labelled inputs from two random views.

Inputs are images ``[N, C, H, W]`` (the built-in datasets, or image arrays in NPZ/.pt files) or feature vectors
``[N, d]`` (a table of the user's: every column but the label is a feature, standardised with the training split's
statistics). An encoder (``train.encoder``: ``mlp`` or ``cnn``) with a projection head is trained by a strategy
(:mod:`negkit.strategies`) on two views of each batch; views of images are shifts, rotations, noise and erasing,
views of vectors are Gaussian noise and feature dropout (:class:`negkit.data.ViewConfig`).

Evaluation on the backbone features of the test split: weighted kNN, a linear probe, retrieval of test samples
against the training set (Recall@k, MAP@R), alignment, uniformity and tolerance; and the negative report of each
strategy's negative distribution at the end of training. Baseline: the same metrics on the raw inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import Tensor

from negkit.data import (
    DatasetSplits,
    IndexedDataset,
    MPerClassSampler,
    ViewConfig,
    iterate_batches,
    list_datasets,
    load_dataset,
    random_views,
)
from negkit.data.registry import dataset_loader
from negkit.distributed import gather, local_rows
from negkit.io import load_torch, read_json, save_torch
from negkit.metrics import (
    alignment,
    knn_accuracy,
    linear_probe_accuracy,
    opis,
    retrieval_metrics,
    tolerance,
    uniformity,
)
from negkit.models import ContrastiveModel, build_model
from negkit.negatives import negative_report
from negkit.report import plots
from negkit.report.tables import k_sweep_points, negatives_table
from negkit.strategies import StrategyLoss, create_strategy, parse_strategy_entry
from negkit.tasks.base import Column, StepResult, Strict, Task, Trainee, register_task

PROBE_SIZE = 512  # anchors of the negative probe
#: views of feature vectors when a config sets neither noise nor dropout
VECTOR_VIEWS = {"noise": 0.1, "dropout": 0.2}


class ViewSettings(Strict):
    """Augmentation strengths (0 disables one). Images: ``shift`` (px), ``rotation`` (degrees), ``noise``,
    ``erase`` (probability), ``scale`` (random zoom). Vectors: ``noise`` (std in units of the standardised
    features), ``dropout``."""

    shift: int = Field(2, ge=0)
    rotation: float = Field(0.0, ge=0)
    noise: float = Field(0.0, ge=0)
    erase: float = Field(0.0, ge=0, le=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    scale: float = Field(0.0, ge=0)


class BatchSettings(Strict):
    """How training batches are drawn: ``"random"`` (shuffled, the last partial batch dropped) or ``"m-per-class"``
    (:class:`negkit.data.MPerClassSampler`: ``m`` samples of each of ``batch_size / m`` classes)."""

    sampler: Literal["random", "m-per-class"] = "random"
    m: int = Field(4, ge=1)


class EvalSettings(Strict):
    knn_k: int = Field(20, ge=1)
    knn_temperature: float = Field(0.07, gt=0)
    probe_c: float = Field(1.0, gt=0)
    recall_ks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 5, 10], min_length=1)


class LabelledFiles(Strict):
    """``[data]`` of the contrastive task: the user's labelled file(s) (CSV, Parquet, NPZ/NPY or .pt)."""

    train: str
    test: str | None = None  # else a seeded stratified split of ``train``
    label: str = "label"
    test_fraction: float = Field(0.2, gt=0, lt=1)


@torch.no_grad()
def embed(model: ContrastiveModel, x: Tensor, batch_size: int = 1024, *, projection: bool = False) -> Tensor:
    """Backbone features ``[N, feature_dim]`` (or head outputs with ``projection``) in eval mode."""
    was_training = model.training
    model.eval()
    encode = model if projection else model.features
    features = torch.cat([encode(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return features


@register_task
class ContrastiveTask(Task):
    name = "contrastive"
    description = "labelled inputs (images or feature vectors): an encoder trained on two views per sample"
    sections: ClassVar[dict[str, type[Strict]]] = {
        "views": ViewSettings,
        "eval": EvalSettings,
        "batches": BatchSettings,
    }
    data_settings = LabelledFiles
    default_dataset = "mnist5000"
    default_strategies = ("simclr", "dcl", "hucl", "scl", "supcon", "hscl", "ans:in_batch=true")
    step_fields = ("false_negative_rate",)
    trains_across_processes = True  # negkit.train.loop.fit: global negatives under torchrun
    extra_options: ClassVar[dict[str, type]] = {"label_noise": float}  # any dataset (negkit.data.load_dataset)
    columns = (
        Column("knn_acc", "kNN acc"),
        Column("linear_acc", "linear acc"),
        Column("recall_at_1", "R@1"),
        Column("map_at_r", "MAP@R"),
        Column("alignment", "align ↓", "{:.3f}"),
        Column("uniformity", "unif ↓", "{:.3f}"),
        Column("tolerance", "tolerance", "{:.3f}"),
        Column("opis", "OPIS ↓", "{:.4f}"),
        Column("false_negative_rate", "FN rate", "{:.3f}"),
        Column("train_seconds", "train s", "{:.1f}"),
    )

    data: DatasetSplits
    views: ViewConfig

    @classmethod
    def datasets(cls) -> list[str]:
        return list_datasets()

    @classmethod
    def dataset_loader(cls, name: str) -> Any:
        return dataset_loader(name)

    @classmethod
    def check_strategy(cls, entry: str, params: dict[str, Any]) -> None:
        # the sampler a strategy draws from checks its own parameters (e.g. k >= 1): build it now, not mid-run
        create_strategy(parse_strategy_entry(entry)[0], **params).negative_sampler(2)

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)
        batches, batch_size = config.batches, config.train.batch_size
        if batches.sampler == "m-per-class" and batch_size % batches.m:
            raise ValueError(
                f"batches.m: train.batch_size ({batch_size}) must be a multiple of m ({batches.m}) with the "
                "m-per-class sampler (m samples of each of batch_size / m classes)"
            )

    # ------------------------------------------------------------------------------------ data and baselines

    def load(self) -> None:
        config = self.config
        if config.data is None:
            self.data = load_dataset(config.dataset, seed=config.seed, **config.dataset_options)
        else:
            from negkit.data.files import load_labelled_file

            files = config.data
            self.data = load_labelled_file(
                files.train, label=files.label, test=files.test, test_fraction=files.test_fraction, seed=config.seed
            )
        views = config.views.model_dump()
        self.vector_views = self.data.train_x.dim() == 2 and not (views["noise"] or views["dropout"])
        if self.vector_views:
            views.update(VECTOR_VIEWS)
        self.views = ViewConfig(**views)

    @property
    def dataset_name(self) -> str:
        return self.data.name

    @property
    def dataset_description(self) -> str:
        if self.vector_views:
            chosen = ", ".join(f"{key} {value}" for key, value in VECTOR_VIEWS.items())
            return f"{self.data.description}; vector views: {chosen} (the config sets neither)"
        return self.data.description

    def evaluate(self, train: Tensor, test: Tensor, *, positive_pairs: tuple[Tensor, Tensor] | None = None) -> dict:
        """Every metric of the report for one embedding (test set against the train set)."""
        data, settings = self.data, self.config.eval
        metrics = {
            "knn_acc": knn_accuracy(
                train, data.clean_train_y, test, data.test_y, k=settings.knn_k, temperature=settings.knn_temperature
            ),
            "linear_acc": linear_probe_accuracy(
                train, data.clean_train_y, test, data.test_y, C=settings.probe_c, seed=self.config.seed
            ),
        }
        metrics.update(retrieval_metrics(test, data.test_y, train, data.clean_train_y, ks=tuple(settings.recall_ks)))
        if positive_pairs is not None:
            metrics["alignment"] = alignment(*positive_pairs)
        metrics["uniformity"] = uniformity(test)
        metrics["tolerance"] = tolerance(test, data.test_y)
        try:  # threshold consistency across classes (negkit's OPIS); needs two classes with pairs of both kinds
            metrics["opis"] = opis(test, data.test_y)
        except ValueError:
            metrics["opis"] = None
        return metrics

    def baselines(self) -> dict[str, dict[str, Any]]:
        """``raw`` inputs, and the ``random-init`` encoder: the weights every strategy starts from (the loop seeds
        torch with the config's seed before building each strategy's model), so a strategy that ends below it
        has learnt nothing its architecture did not already give."""
        data = self.data
        with torch.random.fork_rng():
            torch.manual_seed(self.config.seed)
            model = self.new_model()
        return {
            "raw": self.evaluate(data.train_x.flatten(1), data.test_x.flatten(1)),
            "random-init": self.evaluate(embed(model, data.train_x), embed(model, data.test_x)),
        }

    def run_metrics(self) -> dict[str, Any]:
        names = getattr(self.data, "class_names", None)
        return {} if names is None else {"class_names": list(names)}

    # --------------------------------------------------------------------------------------------- training

    def new_model(self) -> ContrastiveModel:
        settings = self.config.train
        return build_model(
            settings.encoder,
            self.data.input_shape,
            feature_dim=settings.feature_dim,
            hidden_dim=settings.hidden_dim,
            projection_dim=settings.projection_dim,
        )

    def build(self, entry: str) -> Trainee:
        settings = self.config.train
        model = self.new_model()
        strategy = create_strategy(parse_strategy_entry(entry)[0], **self.config.params_for(entry))
        strategy.bind(len(self.data.train_x), settings.projection_dim)
        dataset = IndexedDataset(self.data.train_x, self.data.train_y)
        batch_size = min(settings.batch_size, len(dataset))
        sampler = None
        if self.config.batches.sampler == "m-per-class":
            sampler = MPerClassSampler(self.data.train_y, self.config.batches.m, batch_size, seed=self.config.seed)
        steps = len(dataset) // batch_size if sampler is None else len(sampler)
        if hasattr(strategy, "attach_encoder"):  # a momentum key encoder (moco) copies the fresh model
            strategy.attach_encoder(model, settings.epochs * steps)
        return Trainee(
            model,
            strategy,
            list(model.parameters()) + [p for p in strategy.parameters() if p.requires_grad],
            scratch={"dataset": dataset, "batch_size": batch_size, "sampler": sampler, "steps": steps},
        )

    def steps_per_epoch(self, trainee: Trainee) -> int:
        return trainee.scratch["steps"]

    def start_epoch(self, trainee: Trainee, epoch: int, generator: torch.Generator) -> None:
        if trainee.strategy.needs_refresh:
            trainee.strategy.refresh(embed(trainee.model, self.data.train_x, projection=True), self.data.train_y)

    def batches(self, trainee: Trainee, generator: torch.Generator) -> Any:
        dataset, sampler = trainee.scratch["dataset"], trainee.scratch["sampler"]
        if sampler is None:
            return iterate_batches(dataset, trainee.scratch["batch_size"], generator)
        return ((dataset.x[index], dataset.y[index], index) for index in sampler.epoch_batches(generator))

    def step(self, trainee: Trainee, batch: Any, generator: torch.Generator) -> StepResult:
        x, y, index = batch
        both = torch.cat([random_views(x, self.views, generator), random_views(x, self.views, generator)])
        if hasattr(trainee.strategy, "encode_keys"):  # moco: keys of the same views by its momentum encoder
            trainee.strategy.encode_keys(*both.chunk(2))
        # Across processes: this rank encodes its slice of the views and the loss sees the gathered global batch.
        view1, view2 = (local_rows(view) for view in both.chunk(2))
        z1, z2 = trainee.scratch.get("ddp", trainee.model)(torch.cat([view1, view2])).chunk(2)
        z1, z2 = gather(z1), gather(z2)
        loss = trainee.strategy(z1, z2, y, index)
        return StepResult(loss, {"false_negative_rate": trainee.strategy.false_negative_rate(y)})

    def end_epoch(self, trainee: Trainee, epoch: int, last: bool) -> dict[str, Any]:
        model, data, settings = trainee.model, self.data, self.config.eval
        record: dict[str, Any] = {
            "knn_acc": knn_accuracy(
                embed(model, data.train_x),
                data.clean_train_y,
                embed(model, data.test_x),
                data.test_y,
                k=settings.knn_k,
                temperature=settings.knn_temperature,
            ),
            **trainee.strategy.epoch_metrics(),
        }
        if type(trainee.strategy).diagnostics is not StrategyLoss.diagnostics:  # only strategies that measure some
            probe_a, probe_b, probe_labels, _ = self.probe_views(self.config.seed + 7)
            with torch.no_grad():
                record["diagnostics"] = trainee.strategy.diagnostics(
                    embed(model, probe_a, projection=True), embed(model, probe_b, projection=True), probe_labels
                )
        return record

    def final_metrics(self, trainee: Trainee, history: list[dict[str, Any]], run_dir: Path) -> dict[str, Any]:
        model, strategy, data = trainee.model, trainee.strategy, self.data
        train_features, test_features = embed(model, data.train_x), embed(model, data.test_x)
        pair_generator = torch.Generator().manual_seed(self.config.seed + 1)
        view_a = embed(model, random_views(data.test_x, self.views, pair_generator))
        view_b = embed(model, random_views(data.test_x, self.views, pair_generator))
        metrics: dict[str, Any] = self.evaluate(train_features, test_features, positive_pairs=(view_a, view_b))
        metrics["false_negative_rate"] = sum(r["false_negative_rate"] for r in history) / len(history)
        metrics["negatives"] = self.probe_negatives(trainee)
        metrics["train_seconds"] = sum(r["seconds"] for r in history)
        metrics["final_loss"] = history[-1]["loss"]
        metrics.update({key: history[-1][key] for key in strategy.epoch_metrics()})
        entry = history[-1]["strategy"]
        save_torch(run_dir / "embeddings" / f"{entry}.pt", {"features": test_features, "labels": data.test_y})
        return metrics

    # ------------------------------------------------------------------------------------ negative report

    def probe_views(self, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """A fixed probe batch (the first ``PROBE_SIZE`` training samples) and two seeded views of it."""
        x, y = self.data.train_x[:PROBE_SIZE], self.data.clean_train_y[:PROBE_SIZE]
        generator = torch.Generator().manual_seed(seed)
        return random_views(x, self.views, generator), random_views(x, self.views, generator), y, torch.arange(len(x))

    def probe_negatives(self, trainee: Trainee) -> dict[str, Any]:
        """The negative report of a strategy at the end of training: its negative distribution applied to the
        probe anchors against the projections of the whole training set."""
        model, data, seed = trainee.model, self.data, self.config.seed + 11
        view_a, view_b, labels, ids = self.probe_views(seed)
        anchors, positives = embed(model, view_a, projection=True), embed(model, view_b, projection=True)
        pool = embed(model, data.train_x, projection=True)
        sampler = trainee.strategy.negative_sampler(trainee.scratch["batch_size"])
        common = dict(
            anchor_labels=labels,
            pool_labels=data.clean_train_y,
            anchor_ids=ids,
            pool_ids=torch.arange(len(pool)),
            positives=positives,
        )
        negatives = sampler.sample(anchors, pool, **common, generator=torch.Generator().manual_seed(seed))
        report = negative_report(anchors, pool, negatives, **common)
        return {"sampler": repr(sampler), **report.as_dict()}

    # --------------------------------------------------------------------------------------------- reporting

    @classmethod
    def report(cls, run_dir: Path, metrics: dict[str, Any], history: list[dict[str, str]]) -> tuple[str, list[str]]:
        strategies, config = metrics["strategies"], metrics["config"]
        plot_dir = run_dir / "plots"
        best = max(strategies, key=lambda name: strategies[name]["knn_acc"])
        plots.training_curves(history, plot_dir / "curves.png")
        plots.accuracy_bars(strategies, metrics["baselines"], plot_dir / "accuracy.png")
        plots.alignment_uniformity(strategies, plot_dir / "alignment_uniformity.png")
        embedding = load_torch(run_dir / "embeddings" / f"{best}.pt")
        plots.projection(
            embedding["features"], embedding["labels"], f"{best}: test features (PCA)", plot_dir / "projection.png"
        )
        sections = [progress_section(strategies, metrics["baselines"], history)] if history else []
        sections += [
            "## Plots\n\n![training curves](plots/curves.png)\n\n![accuracy per strategy](plots/accuracy.png)\n\n"
            "![alignment vs uniformity](plots/alignment_uniformity.png)\n\n"
            "![projection of the best embedding](plots/projection.png)"
        ]
        reports = {name: v["negatives"] for name, v in strategies.items() if v.get("negatives")}
        if reports:
            plots.rank_histograms(reports, plot_dir / "negative_ranks.png")
            sections.append(
                "## Negatives\n\nWhat each strategy's negative distribution returns at the end of training, measured "
                f"on {PROBE_SIZE} training anchors against the projections of the whole training set: the "
                "false-negative rate (share of negatives with the anchor's label), the similarity of negatives and of "
                "the positive, the share of negatives at least as similar as the positive, and how hard they are "
                "(rank percentile among the anchor's eligible rows; top-1 % = share among the 1 % most similar).\n\n"
                f"{negatives_table(strategies)}\n\n![hardness of the negatives](plots/negative_ranks.png)"
            )
        sweep = k_sweep_points(strategies)
        if sweep:
            plots.k_sweep(sweep, plot_dir / "k_sweep.png")
            sections.append("## Accuracy vs the number of negatives K\n\n![accuracy vs K](plots/k_sweep.png)")
        if any(row.get("k") for row in history):
            plots.k_trajectory(history, plot_dir / "k_trajectory.png")
            sections.append("## Adaptive K\n\n![K and q during training](plots/k_trajectory.png)")
        for name in strategies:
            saved = read_json(run_dir / "results" / f"{name}.json")["history"]
            if any(row.get("diagnostics") for row in saved):
                figure = plot_dir / f"diagnostics_{name}.png"
                plots.diagnostic_curves(saved, name, figure)
                sections.append(f"## Diagnostics of {name}\n\n![diagnostics of {name}](plots/{figure.name})")
        if metrics.get("class_names"):
            sections.append("## Classes\n\n" + ", ".join(f"{i}: {n}" for i, n in enumerate(metrics["class_names"])))
        train = config["train"]
        setup = (
            f"Encoder `{train['encoder']}` (features {train['feature_dim']}, projection {train['projection_dim']}), "
            f"{train['epochs']} epochs, batch {train['batch_size']}, AdamW lr {train['lr']} (warm-up "
            f"{train['warmup_epochs']} epochs, cosine), weight decay {train['weight_decay']}, views {config['views']}, "
            f"seed {config['seed']}. Metrics on the test split, on backbone features: weighted kNN "
            f"(k = {config['eval']['knn_k']}), linear probe (logistic regression), retrieval of test queries against "
            "the train set (R@1, MAP@R), alignment and uniformity (Wang & Isola), tolerance (Wang & Liu), OPIS "
            "(negkit's definition: variance across classes of the true- and false-positive rates of cosine "
            "thresholds 0–0.99; lower = one threshold serves every class), and the false-negative rate of the "
            "in-batch negatives each strategy used (share with the anchor's label)."
        )
        return setup, sections


def progress_section(
    strategies: dict[str, dict[str, Any]], baselines: dict[str, dict[str, Any]], history: list[dict[str, str]]
) -> str:
    """Did training teach the encoder anything: each strategy's test kNN accuracy after its first and its last
    epoch beside the random-init encoder it started from (and raw inputs)."""
    init = baselines.get("random-init")
    lines = [
        "## Learning\n\nTest kNN accuracy after the first and the last epoch, against the encoder every strategy "
        "starts from (random-init"
        + (f", kNN {init['knn_acc']:.4f}" if init else "")
        + f") and raw inputs (kNN {baselines['raw']['knn_acc']:.4f}).\n",
        "| strategy | labels | epoch 1 | final | final − epoch 1 | final − random-init |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in strategies.items():
        rows = [row for row in history if row["strategy"] == name]
        first = float(rows[0]["knn_acc"]) if rows else float("nan")
        final = values["knn_acc"]
        above_init = f"{final - init['knn_acc']:+.4f}" if init else "–"
        uses = "yes" if values.get("uses_labels") else "no"
        lines.append(f"| {name} | {uses} | {first:.4f} | {final:.4f} | {final - first:+.4f} | {above_init} |")
    return "\n".join(lines)
