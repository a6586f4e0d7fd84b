"""The training loop: Keras `fit`, or an explicit GradientTape loop (trainer.loop=custom).

Both run the same compiled loss, metrics and callbacks, so their logs and results compare
one to one. The custom loop exists for teaching and debugging: every step is visible here.
"""

from __future__ import annotations


def fit(cfg, model, data, callbacks: list, initial_epoch: int = 0) -> dict:
    """Train `model` on data.train (validating on data.val) from `initial_epoch` (a resumed run);
    returns history as lists per key."""
    epochs = int(cfg.trainer.epochs)
    if cfg.trainer.loop == "custom":
        return custom_fit(model, data.train, data.val, epochs, callbacks, initial_epoch)
    history = model.fit(data.train, validation_data=data.val, epochs=epochs, callbacks=callbacks, verbose=0,
                        shuffle=False, initial_epoch=initial_epoch)  # tf.data shuffles itself
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def custom_fit(model, train, val, epochs: int, callbacks: list, initial_epoch: int = 0) -> dict:
    """An explicit loop: forward pass under GradientTape, gradients, optimizer step, metrics.

    Runs under the model's distribution strategy (each replica does `step` on its shard;
    metric variables aggregate across replicas when read).
    """
    import keras
    import tensorflow as tf

    strategy = model.distribute_strategy  # the strategy whose scope built the model
    optimizer = model.optimizer
    with strategy.scope():
        optimizer.build(model.trainable_variables)

    from keras.src.losses.loss import unscale_loss_for_distribution

    def step(x, y):
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            # compute_loss adds the layers' regularisation losses and divides by the replica
            # count, so summed gradients across replicas equal the global-batch gradient.
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
            scaled = optimizer.scale_loss(loss)  # loss scaling under mixed_float16
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply(grads, model.trainable_variables)
        model._loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=tf.shape(y_pred)[0])
        model.compute_metrics(x, y, y_pred)

    @tf.function(jit_compile=bool(model.jit_compile))
    def train_step(x, y):
        strategy.run(step, args=(x, y))

    train_dist = strategy.experimental_distribute_dataset(train)
    cb = keras.callbacks.CallbackList(callbacks, add_history=True, model=model, epochs=epochs, verbose=0)
    model.stop_training = False
    cb.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        model.reset_metrics()
        cb.on_epoch_begin(epoch)
        for x, y in train_dist:
            train_step(x, y)
            if model.stop_training:  # set by a callback or by Ctrl-C (runner.stop_on_ctrl_c)
                break
        logs = {k: float(v) for k, v in model.get_metrics_result().items()}
        if val is not None:
            values = model.evaluate(val, verbose=0, return_dict=True)
            logs.update({f"val_{k}": float(v) for k, v in values.items()})
        cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cb.on_train_end()
    return {k: [float(v) for v in vals] for k, vals in model.history.history.items()}
