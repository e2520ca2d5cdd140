"""Training on several worker processes (``--strategy multi_worker``, workers named by TF_CONFIG).

Keras 3 ``model.fit`` fails under ``tf.distribute.MultiWorkerMirroredStrategy``
(keras-team/keras#20585: before the first step it reduces a distributed batch with
``strategy.reduce``, which collective all-reduce cannot do for a tuple of tensors).
:func:`fit` replaces that one call of the staged trainer: every step runs the model's own
``train_step`` on each replica (``strategy.run``; the optimizer all-reduces the
gradients, so every worker holds the same weights after every step), and logs are the
metrics summed over all workers, so callbacks see what ``model.fit`` would give them.

Each worker reads its own shard files (:func:`input_data`) with the global batch split
between the replicas. Every worker runs the same code, collectives and checkpoint saves
included; only the chief writes the run directory, the others write theirs into a
scratch directory that is deleted afterwards (:func:`scratch_dir`).
"""
import contextlib
import functools
import tempfile

import keras
import tensorflow as tf

MULTI_WORKER = "multi_worker"


def is_chief(strategy_name):
    """Whether this process writes the run directory: always, except on the workers of a
    multi-worker cluster other than the chief (the ``chief`` task, else worker 0)."""
    if strategy_name != MULTI_WORKER:
        return True
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not resolver.task_type:
        return True  # no TF_CONFIG: a cluster of one
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs


@contextlib.contextmanager
def scratch_dir(strategy_name):
    """None on the chief; on other workers a temporary directory for their copy of the run."""
    if is_chief(strategy_name):
        yield None
    else:
        with tempfile.TemporaryDirectory(prefix="samplecnn-worker-") as scratch:
            yield scratch


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def input_data(strategy, global_batch, make_dataset):
    """``make_dataset(batch_size=...)`` for one process, or under multi-worker training a
    distributed data set whose workers each call ``make_dataset(batch_size=per replica,
    shard=(workers, this worker))``."""
    if not is_multi_worker(strategy):
        return make_dataset(batch_size=global_batch)

    def worker_dataset(context):
        return make_dataset(batch_size=context.get_per_replica_batch_size(global_batch),
                            shard=(context.num_input_pipelines, context.input_pipeline_id))

    return strategy.distribute_datasets_from_function(worker_dataset)


def fit_function(model):
    """``model.fit``, or :func:`fit` for a model made under multi-worker training."""
    return functools.partial(fit, model) if is_multi_worker(model.distribute_strategy) else model.fit


def fit(model, x, steps_per_epoch, epochs, initial_epoch=0, validation_data=None, callbacks=None, verbose=1,
        shuffle=False):
    """``model.fit`` for distributed data sets under MultiWorkerMirroredStrategy, with the
    same callback calls and logs (``shuffle`` is ignored as fit ignores it for tf.data)."""
    strategy = model.distribute_strategy
    callbacks = keras.callbacks.CallbackList(callbacks, add_history=False, add_progbar=verbose != 0, verbose=verbose,
                                             epochs=epochs, steps=steps_per_epoch, model=model)

    @tf.function
    def train_step(iterator):
        strategy.run(model.train_step, args=(next(iterator),))
        return model.get_metrics_result()  # read across replicas: totals of every worker

    @tf.function
    def evaluate(dataset):
        for batch in dataset:
            strategy.run(model.test_step, args=(batch,))
        return model.get_metrics_result()

    iterator = iter(x)
    model.stop_training = False
    callbacks.on_train_begin()
    epoch_logs = {}
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        callbacks.on_epoch_begin(epoch)
        for step in range(steps_per_epoch):
            callbacks.on_train_batch_begin(step)
            logs = train_step(iterator)
            callbacks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        epoch_logs = {name: float(value) for name, value in logs.items()}
        if validation_data is not None:
            model.reset_metrics()
            callbacks.on_test_begin()
            val_logs = {name: float(value) for name, value in evaluate(validation_data).items()}
            callbacks.on_test_end(val_logs)
            epoch_logs.update({f"val_{name}": value for name, value in val_logs.items()})
        callbacks.on_epoch_end(epoch, epoch_logs)
        if model.stop_training:
            break
    callbacks.on_train_end(epoch_logs)
