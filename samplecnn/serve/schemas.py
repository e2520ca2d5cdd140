"""The API's request and response bodies, each field documented for the OpenAPI schema."""
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, create_model

from samplecnn.serve import jobs

Pair = tuple[str, float]


class Health(BaseModel):
    status: str = Field(description="'ok' while the server answers.")
    model: str = Field(description="Path of the model being served.")


class ModelInfo(BaseModel):
    path: str = Field(description="The served run directory, checkpoint or exported model.")
    classes: list[str] = Field(description="Class names, in the order of the model's outputs.")
    spec: dict[str, Any] = Field(description="Data spec: sample_rate, segment_samples, task (single- or "
                                             "multi-label), threshold, ...")
    train: Optional[dict[str, Any]] = Field(description="The training options of the run (config.json); null for "
                                                        "an exported model.")
    test: Optional[dict[str, Any]] = Field(description="Test scores of the run (results.json): roc_auc, pr_auc, "
                                                       "accuracy, f1, ...; null when the run has none.")


class Window(BaseModel):
    path: str = Field(description="The file as uploaded (archive members as archive.zip/member/path).")
    start: float = Field(description="Start of the window in seconds (0 for a whole file).")
    end: float = Field(description="End of the window in seconds (the file's duration for a whole file).")
    top: list[Pair] = Field(description="The top_k classes, [class, probability], most probable first.")
    scores: dict[str, float] = Field(description="Every class's probability (mean over the window's segments).")
    above_threshold: list[Pair] = Field(description="Every class at or above the threshold (multi-label models: "
                                                    "the data set's threshold unless one is given).")


class FilePredictions(BaseModel):
    path: str = Field(description="The file as uploaded.")
    error: Optional[str] = Field(description="Why the file could not be tagged; null when it was.")
    predictions: list[Window] = Field(description="One row for the file, or one per window with `window`.")


class PredictResponse(BaseModel):
    model: str = Field(description="Path of the model that answered.")
    files: list[FilePredictions] = Field(description="One entry per audio file received, in order, then the "
                                                     "inputs that could not be read (archives, members).")


class Embedding(BaseModel):
    start: float = Field(description="Start of the window in seconds.")
    end: float = Field(description="End of the window in seconds.")
    features: list[float] = Field(description="The layer's output, averaged over time and the window's segments.")


class FileEmbeddings(BaseModel):
    path: str = Field(description="The file as uploaded.")
    error: Optional[str] = Field(description="Why the file could not be embedded; null when it was.")
    embeddings: list[Embedding] = Field(description="One vector for the file, or one per window with `window`.")


class EmbedResponse(BaseModel):
    layer: str = Field(description="The layer the features come from.")
    files: list[FileEmbeddings] = Field(description="One entry per audio file received, in order.")


JOB_FIELD_HELP = {
    "dataset": "Data set to train on: a name built in the server's --data-dir (GET /v1/training-options).",
    "name": "Run name (letters, digits, '.', '_', '-'); the run directory is <date>_<time>-<dataset>-<name>.",
    "block": "Convolutional block: basic, se, res1, res2, rese1, rese2 or any registered block.",
    "amplifying_ratio": "Width of the squeeze-excitation bottleneck relative to the channels (> 0).",
    "multi": "Use multi-level feature aggregation.",
    "batch_size": "Mini-batch size (>= 1).",
    "momentum": "SGD momentum, in [0, 1).",
    "lr": "Learning rate (> 0).",
    "lr_decay": "Learning-rate factor between stages (> 0).",
    "dropout": "Dropout rate, in [0, 1).",
    "weight_decay": "L2 weight decay on kernels (>= 0).",
    "num_stages": "Number of stages (>= 1).",
    "patience": "Validations in a row without a lower validation loss that end a stage (>= 0).",
    "num_readers": "Parallel TFRecord readers (>= 1).",
    "max_epochs": "Most validations (epochs, or validation periods on small sets) per stage (>= 1).",
    "validation_steps": "Validate every epoch, or every this many optimizer steps if an epoch is shorter (>= 0; "
                        "null: the recipe's).",
    "min_steps": "Optimizer steps before patience can end the first stage (>= 0; null: the recipe's).",
    "init_features": "Channels of the first convolution (>= 1).",
    "seed": "Random seed.",
    "strategy": "tf.distribute strategy: default or mirrored (multi_worker runs are started with train.py).",
    "mixed_precision": "Compute in bfloat16 or float16 where a probe (CPU) or the compute capability (GPU) "
                       "finds it faster; false: float32 (null: the recipe's).",
    "tensorboard_images": "Draw validation images into TensorBoard after every epoch.",
    "recipe": "Recipe: samplecnn or 2019 (see the README).",
    "init_from": "Fine-tune from this run directory or checkpoint on the server (null: random weights).",
    "freeze_backbone": "With init_from: train only the head.",
    "backbone_lr_scale": "With init_from: the backbone's learning rate relative to the head's, in (0, 1].",
    "class_weight": "none, or balanced: weigh the loss by inverse class frequency.",
}
"""What each TrainConfig field means; the fields and defaults themselves come from TrainConfig."""


def _job_request():
    fields = {}
    for name, field in jobs.FIELDS.items():
        if name == "dataset":
            fields[name] = (str, Field(description=JOB_FIELD_HELP[name]))
        elif name == "name":
            fields[name] = (Optional[str], Field(None, description=JOB_FIELD_HELP[name], pattern=jobs.NAME_PATTERN))
        else:
            help_ = f"{JOB_FIELD_HELP[name]} Default: {field.default!r}."
            fields[name] = (Optional[field.type], Field(None, description=help_))
    return create_model("TrainJobRequest", __config__=ConfigDict(extra="forbid"), **fields)


TrainJobRequest = _job_request()


class Job(BaseModel):
    id: str = Field(description="Job id.")
    status: str = Field(description="queued, running, finished, failed or cancelled.")
    config: dict[str, Any] = Field(description="The training options given.")
    run_dir: Optional[str] = Field(description="The job's run directory, once train.py has made it.")
    created: float = Field(description="When the job was submitted (Unix time).")
    started: Optional[float] = Field(description="When its latest process started (Unix time).")
    ended: Optional[float] = Field(description="When it ended (Unix time); null while queued or running.")
    error: Optional[str] = Field(description="For a failed job, train.py's error message.")
    elapsed_seconds: Optional[float] = Field(description="Seconds since its latest start (until it ended).")
    stage: Optional[int] = Field(description="Current stage (from 0), from state.json.")
    epoch: Optional[int] = Field(description="Epochs completed over all stages, from state.json.")
    num_stages: int = Field(description="Stages the run trains.")
    max_epochs: int = Field(description="Most epochs per stage.")
    latest: Optional[dict[str, Any]] = Field(description="The last row of log.csv: epoch, stage, lr, loss, "
                                                         "accuracy, val_loss, val_accuracy, best, seconds, ...")
    eta_seconds: Optional[float] = Field(description="Upper bound of the time left while running: mean epoch time "
                                                     "x epochs left if every remaining stage ran max_epochs "
                                                     "(patience usually ends stages sooner).")
    results: Optional[dict[str, Any]] = Field(description="For a finished job, its test scores and final checkpoint "
                                                          "(results.json).")
    output_tail: list[str] = Field(description="The last lines train.py printed.")


class JobList(BaseModel):
    jobs: list[Job] = Field(description="Every job, newest first.")


class TrainingOptions(BaseModel):
    datasets: list[str] = Field(description="Data sets built in the server's --data-dir.")
    blocks: list[str] = Field(description="Registered blocks.")
    recipes: list[str] = Field(description="Registered recipes.")
    defaults: dict[str, Any] = Field(description="Default value of every job field.")


class LoadModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(description="A finished run to serve: a job id, or the name of a run directory in the "
                                 "server's --log-dir.")
