"""The asset graph: data (per snapshot partition) -> training -> evaluation."""

from pipelines.orchestration.assets.data import DATA_ASSETS
from pipelines.orchestration.assets.training import EVALUATION_ASSETS, TRAINING_ASSETS

ALL_ASSETS = [*DATA_ASSETS, *TRAINING_ASSETS, *EVALUATION_ASSETS]
