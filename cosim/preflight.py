"""Everything a scenario names, opened and checked before anything heavy starts (SUMO, the model's weights, the
first round): network, route, additional, trace, RSU and dataset files are read with the loaders the run uses; the
model is built from its config alone to check LoRA targets, rank and sequence length; the data's label set gives
num_labels and the client shards are drawn as the run will draw them. Each problem is one line,
`field.path: what is wrong; how to fix it`, so `cosim validate` and `cosim run` refuse bad input with exit 2."""

from __future__ import annotations

import codecs
import functools
import gzip
import xml.etree.ElementTree as ElementTree
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cosim.scenario import (
    LearningConfig,
    Scenario,
    ScenarioError,
    TaskConfig,
    head_width_problem,
    load_scenario,
    utf8_problem,
)
from mobility.config import FileNetworkConfig, MobilityConfig, OsmNetworkConfig, RoutesDemandConfig, RsuConfig
from mobility.errors import MobilityError
from mobility.rsu import file_layout, junction_layout
from mobility.trace import TraceMobility

if TYPE_CHECKING:
    from models.backbone import BackboneOutline
    from models.data import Dataset


def load_checked(path: str | Path, overrides: list[str] | None = None, *, learning: bool = True) -> Scenario:
    """load_scenario then check_scenario: a scenario that can run, or ScenarioError listing every problem."""
    scenario = load_scenario(path, overrides)
    check_scenario(scenario, str(path), learning=learning)
    return scenario


def check_scenario(scenario: Scenario, source: str, *, learning: bool = True) -> None:
    """Raise ScenarioError listing every problem found; `learning=False` checks mobility and RSUs only."""
    found = mobility_problems(scenario.mobility, scenario.rsu)
    if learning:
        found += tasks_problems(scenario) if scenario.tasks else learning_problems(scenario.learning, scenario.seed)
    if found:
        raise ScenarioError(source, found)


def mobility_problems(mobility: MobilityConfig, rsu: RsuConfig) -> list[str]:
    """Mobility and RSU files readable and in the right format; a junction layout only where there is a network."""
    problems = []
    network = mobility.network
    if isinstance(network, FileNetworkConfig | OsmNetworkConfig):
        root = "net" if isinstance(network, FileNetworkConfig) else "osm"
        problems += _xml_problems("mobility.network.path", network.path, root)
    if isinstance(mobility.demand, RoutesDemandConfig):
        for index, path in enumerate(mobility.demand.files):
            problems += _xml_problems(f"mobility.demand.files[{index}]", path, None)
    for index, path in enumerate(mobility.additional):
        problems += _xml_problems(f"mobility.additional[{index}]", path, None)
    if mobility.trace is not None:
        problems += _loader_problems("mobility.trace", mobility.trace, lambda path: TraceMobility(path).close())
    if rsu.file is not None:
        problems += _loader_problems("rsu.file", rsu.file, functools.partial(
            file_layout, radius_m=rsu.radius_m, height_m=rsu.height_m, bandwidth_hz=rsu.bandwidth_hz))
    if rsu.layout == "junctions":
        problems += _junction_problems(mobility, rsu, placeable=not problems)
    return problems


def _junction_problems(mobility: MobilityConfig, rsu: RsuConfig, placeable: bool) -> list[str]:
    """Junction RSUs need a road network; on the user's own net they are placed now (enough junctions apart?)."""
    net = mobility.net_file_given
    if mobility.source == "static-disk":
        return ['rsu.layout: "junctions" needs a road network, and source = "static-disk" has none; use layout = '
                '"grid" or "file"']
    if mobility.source == "trace" and net is None:
        return ['rsu.layout: "junctions" needs a road network, and a trace replay has none unless [mobility] network = '
                '{ kind = "file", path = "....net.xml" } names it; name it or use layout = "grid"']
    if net is None or not placeable:  # a generated network exists only once the run builds it
        return []
    return _loader_problems("rsu.count", net, functools.partial(
        junction_layout, count=rsu.count, min_separation_m=rsu.min_separation_m, radius_m=rsu.radius_m,
        height_m=rsu.height_m, bandwidth_hz=rsu.bandwidth_hz))


def learning_problems(cfg: LearningConfig, seed: int) -> list[str]:
    """The model's config against the LoRA settings, the data against the model, and the client shards."""
    from models.backbone import outline_backbone

    try:
        outline = outline_backbone(cfg.model)
    except ValueError as exc:
        return [f"learning.model: {exc}"]
    problems = _model_problems(cfg, outline)
    try:
        train, dev = _splits(cfg.dataset, _stamp(cfg.dataset))
    except ValueError as exc:
        return [*problems, f"learning.dataset: {exc}; fix the file or choose another dataset"]
    return problems + _data_problems(cfg, outline, train, dev, seed)


def tasks_problems(scenario: Scenario) -> list[str]:
    """learning_problems of every [[tasks]] entry (what a task sets itself named `tasks[i].field`), and one head
    width for all (the tasks share the payload: see cosim.federation.multitask)."""
    own = set(TaskConfig.model_fields) - {"name", "budget_weight"}
    problems, labels = [], []
    for index, cfg in enumerate(scenario.task_learning()):
        for problem in learning_problems(cfg, scenario.seed):
            field = problem.partition(":")[0].removeprefix("learning.")
            problems.append(f"tasks[{index}].{problem.removeprefix('learning.')}" if field in own else problem)
        try:
            labels.append(_splits(cfg.dataset, _stamp(cfg.dataset))[0].num_labels)
        except ValueError:
            continue  # reported above
        if width_problem := head_width_problem(index, labels[-1], labels[0]):
            problems.append(width_problem)
    return list(dict.fromkeys(problems))  # a problem of [learning] is found once per task


def _model_problems(cfg: LearningConfig, outline: BackboneOutline) -> list[str]:
    from models.backbone import lora_rank_problem

    problems = []
    missing = [target for target in cfg.lora_targets if target not in outline.linear_names]
    if missing:
        problems.append(f"learning.lora_targets: {', '.join(map(repr, missing))} not a linear layer of {cfg.model}'s "
                        f"encoder; choose among {', '.join(sorted(outline.linear_names))}")
    if rank_problem := lora_rank_problem(cfg.lora_rank, outline.lora_width):
        problems.append(rank_problem)
    if outline.max_positions is not None and cfg.max_length > outline.max_positions:
        problems.append(f"learning.max_length: must be <= {outline.max_positions} (the model's position embeddings), "
                        f"got {cfg.max_length}")
    return problems


def _data_problems(cfg: LearningConfig, outline: BackboneOutline, train: Dataset, dev: Dataset,
                   seed: int) -> list[str]:
    from models.data import ImageClassificationData, client_shards

    modality = "image" if isinstance(train, ImageClassificationData) else "text"
    if modality != outline.modality:
        need = "a ViT checkpoint directory" if modality == "image" else "minilm, tiny-bert or a BERT checkpoint"
        return [f"learning.model: {cfg.model} is a {outline.modality} model but {cfg.dataset} holds {modality} data; "
                f"use {need}"]
    if outline.image_shape is not None and train.images.shape[1:] != outline.image_shape:
        return [f"learning.dataset: images of shape {train.images.shape[1:]} (channels, height, width), the model "
                f"takes {outline.image_shape}; resize them or choose a matching model"]
    empty = [split for split, data in (("train", train), ("dev", dev)) if len(data.labels) == 0]
    if empty:
        return [f"learning.dataset: the {' and '.join(empty)} split of {cfg.dataset} has no samples; add rows"]
    try:
        client_shards(train.labels, cfg.clients, cfg.samples_per_client, cfg.partition, cfg.dirichlet_alpha, seed)
    except ValueError as exc:
        field = "dirichlet_alpha" if cfg.clients * cfg.samples_per_client <= len(train.labels) else "samples_per_client"
        return [f"learning.{field}: {exc}"]
    return []


@functools.lru_cache(maxsize=4)
def _splits(name: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[Dataset, Dataset]:
    """load_splits, reused while the files are unchanged (`stamp`): a sweep validates one dataset many times."""
    del stamp
    from models.data import load_splits

    return load_splits(name)


def _stamp(name: str) -> tuple[tuple[str, int, int], ...]:
    path = Path(name)
    files = [path] if path.is_file() else sorted(path.rglob("*")) if path.is_dir() else []
    return tuple((str(file), file.stat().st_mtime_ns, file.stat().st_size) for file in files if file.is_file())


def _xml_problems(field: str, path: Path, root: str | None) -> list[str]:
    """The whole file parsed as (gzipped) XML, its root element `root` where SUMO requires one."""
    try:
        with (gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")) as handle:
            found = None
            for event, element in ElementTree.iterparse(handle, events=("start", "end")):
                if found is None:
                    found = element.tag
                elif event == "end":
                    element.clear()
    except ElementTree.ParseError as exc:
        return [f"{field}: {path} is not well-formed XML ({exc}); fix the file or regenerate it"]
    except (OSError, EOFError, zlib.error) as exc:
        return [f"{field}: {path} cannot be read ({' '.join(str(exc).split())}); check the file (a .gz must be gzip)"]
    if root is not None and found != root:
        return [f"{field}: {path} has root element <{found}>, expected <{root}>; is it the right kind of file?"]
    return []


def _loader_problems(field: str, path: Path, load: Callable[[Path], object]) -> list[str]:
    """Run the loader the simulation uses; its error, and why a text file cannot be decoded, name the field."""
    text = _text_problem(path)
    if text:
        return [f"{field}: {path} {text}"]
    try:
        load(path)
    except (MobilityError, ValueError) as exc:
        return [f"{field}: {exc}"]
    return []


def _text_problem(path: Path) -> str | None:
    """Plain-text tables must be UTF-8 without a byte-order mark (their header would not match)."""
    if not path.name.lower().endswith((".csv", ".tsv")):
        return None
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        return "starts with a byte-order mark; save it as UTF-8 without BOM"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return utf8_problem(data, exc)
    return None

