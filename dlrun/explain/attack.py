"""Adversarial examples (Szegedy et al. 2014; Goodfellow et al. 2015; Madry et al. 2018) and
fooling images (Nguyen et al. 2015).

    fgsm     x + eps * sign(grad_x loss): one step to the corner of the L-infinity ball
    pgd      `pgd_steps` sign-gradient steps of pgd_step_size * eps from a random point of the
             ball, each projected back into it; per image the step with the highest loss is kept
    fooling  from uniform noise, Adam on the pixels raises log p(class) until the network gives
             every class at least `fooling_confidence`

Images are in [0, 1] units (lens.py) and stay there. `fgsm` and `pgd` are Keras ops and one
tf.GradientTape each, so adversarial training (dlrun/training/adversarial.py) runs them inside
a compiled train step with the model's own loss.
"""

from __future__ import annotations

import numpy as np

from dlrun.contract import Report
from dlrun.explain import ATTACKS


def _per_example(loss, n):
    """A loss as one value per example: per-pixel losses (segmentation) averaged per example."""
    import keras

    if len(loss.shape) == 0:
        return keras.ops.broadcast_to(loss, (n,))
    return keras.ops.mean(keras.ops.reshape(loss, (n, -1)), axis=1) if len(loss.shape) > 1 else loss


def gradient_sign(loss_of, x):
    """sign(d sum(loss_of(x)) / dx)."""
    import keras
    import tensorflow as tf

    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = keras.ops.sum(loss_of(x))
    return keras.ops.sign(tape.gradient(loss, x))


def fgsm(loss_of, x, eps: float):
    """The fast gradient sign method: x moved by eps along the sign of the loss gradient, in [0, 1]."""
    import keras

    x = keras.ops.convert_to_tensor(x, "float32")
    return keras.ops.clip(x + eps * gradient_sign(loss_of, x), 0.0, 1.0)


def pgd(loss_of, x, eps: float, steps: int, step_size: float, random_start: bool = True, seed=None):
    """Projected gradient descent on the loss inside the L-infinity ball of radius eps around x
    (and inside [0, 1]); per example the iterate with the highest loss is returned, so more
    steps never make the attack weaker. `seed`: a keras.random.SeedGenerator, or None."""
    import keras
    import tensorflow as tf

    ops = keras.ops
    x = ops.convert_to_tensor(x, "float32")
    n = ops.shape(x)[0]
    low, high = ops.maximum(x - eps, 0.0), ops.minimum(x + eps, 1.0)
    adv = x
    if random_start and eps > 0:
        # without a SeedGenerator (inside a train step) TF's stateful op, seeded by the run's seed:
        # Keras' global generator would create its variable inside a replicated step, which fails
        noise = (keras.random.uniform(ops.shape(x), -eps, eps, seed=seed) if seed is not None
                 else tf.random.uniform(tf.shape(x), -eps, eps))
        adv = ops.clip(x + noise, low, high)
    best, best_loss = adv, _per_example(loss_of(adv), n)
    shape = (-1,) + (1,) * (len(x.shape) - 1)
    for _ in range(int(steps)):
        adv = ops.clip(adv + step_size * gradient_sign(loss_of, adv), low, high)
        loss = _per_example(loss_of(adv), n)
        better = loss > best_loss
        best = ops.where(ops.reshape(better, shape), adv, best)
        best_loss = ops.where(better, loss, best_loss)
    return best


# -- the attack command's methods ---------------------------------------------------------


def _batches(lens, x, targets, opts, perturb):
    """perturb(loss_of, xb) over `x` in batches (one compiled function), numpy."""
    import tensorflow as tf

    compiled = tf.function(lambda xb, yb: perturb(lambda z: lens.loss(lens.forward(z), yb), xb))
    return np.concatenate([np.asarray(compiled(tf.constant(x[i:i + opts.batch_size]),
                                               tf.constant(targets[i:i + opts.batch_size])))
                           for i in range(0, len(x), opts.batch_size)])


def under_attack(name: str, perturb, lens, x, targets, opts) -> Report:
    """The metric at each eps, the adversarial examples' grid (clean | each eps) and a table."""
    from dlrun.plots.images import image_grid

    clean = lens.predict(x, opts.batch_size)
    clean_answers = lens.answers(clean)
    metrics, rows = {}, []
    g = min(opts.grid, len(x))
    columns = [(list(x[:g]), clean_answers[:g], clean[:g])]
    for eps in opts.eps:
        adv = _batches(lens, x, targets, opts, lambda loss_of, xb, eps=eps: perturb(loss_of, xb, eps))
        probabilities = lens.predict(adv, opts.batch_size)
        answers = lens.answers(probabilities)
        value = lens.measure(answers, targets)
        metrics[f"{name}/eps_{eps:g}/{lens.metric}"] = value
        rows.append({"method": name, "eps": eps, lens.metric: value,
                     "changed_answers": float(np.mean(np.any((answers != clean_answers).reshape(len(x), -1), axis=1))),
                     "max_change": float(np.abs(adv - x).max()) if len(x) else 0.0})
        columns.append((list(adv[:g]), answers[:g], probabilities[:g]))
    pictures, titles, colors = [], [], []
    heads = ["clean", *(f"eps {e:g}" for e in opts.eps)]
    for i in range(g):  # one row per image: the clean image, then its adversarial versions
        for head, (images, answers, probabilities) in zip(heads, columns, strict=True):
            pictures.append(lens.picture(images[i], answers[i]))
            titles.append(f"{head}\n{lens.titles(answers[i:i + 1], probabilities[i:i + 1])[0]}")
            colors.append("black" if lens.correct(answers[i:i + 1], targets[i:i + 1]).all() else "darkred")
    figure = image_grid(np.asarray(pictures), titles, f"{name}: answers on clean and adversarial images "
                        "(red: wrong)", cols=len(heads), colors=colors)
    return Report(metrics=metrics, tables={name: rows}, figures={f"{name}/examples.png": figure})


@ATTACKS.register("fgsm", "Fast gradient sign method (Goodfellow et al.): one step of eps along the loss gradient's sign",
                  tags=("budget",))
def fgsm_attack(lens, x, targets, opts) -> Report:
    return under_attack("fgsm", lambda loss_of, xb, eps: fgsm(loss_of, xb, eps), lens, x, targets, opts)


@ATTACKS.register("pgd", "Projected gradient descent (Madry et al.): pgd_steps projected sign-gradient steps, random start",
                  tags=("budget",))
def pgd_attack(lens, x, targets, opts) -> Report:
    import keras

    seed = keras.random.SeedGenerator(int(opts.seed))
    return under_attack("pgd", lambda loss_of, xb, eps: pgd(loss_of, xb, eps, opts.pgd_steps, opts.pgd_step_size * eps,
                                                           bool(opts.pgd_random_start), seed), lens, x, targets, opts)


@ATTACKS.register("fooling", "Fooling images (Nguyen et al.): noise optimised until each class has >= 0.99 confidence")
def fooling(lens, x, targets, opts) -> Report:
    """One image per class, from uniform noise; Adam on the pixels (kept in [0, 1]) minimises
    -log p(class) until every class reaches `fooling_confidence` or `fooling_steps` run out.
    The confidences reported are the served model's on the final images."""
    import keras
    import tensorflow as tf

    from dlrun.plots.images import image_grid

    n = len(lens.class_names)
    classes = np.arange(n)
    start = np.random.default_rng(int(opts.seed)).uniform(0.0, 1.0, (n, *x.shape[1:])).astype("float32")
    images = keras.Variable(start, name="fooling_images")
    optimizer = keras.optimizers.Adam(float(opts.fooling_learning_rate))
    optimizer.build([images])
    wanted = keras.ops.convert_to_tensor(classes)

    @tf.function
    def step():
        """One Adam step on the images; returns each class's confidence before it."""
        with tf.GradientTape() as tape:
            logp = lens.log_probability(lens.forward(images), wanted)
            loss = -keras.ops.mean(logp)
        optimizer.apply([tape.gradient(loss, images)], [images])
        images.assign(keras.ops.clip(images, 0.0, 1.0))
        return keras.ops.exp(keras.ops.min(logp))

    steps = 0
    while steps < int(opts.fooling_steps) and float(step()) < opts.fooling_confidence:
        steps += 1
    result = np.asarray(images)
    probabilities = lens.predict(result, opts.batch_size)
    reached = lens.confidence(probabilities, classes)
    answers = lens.answers(probabilities)
    rows = [{"class": lens.class_names[c], "confidence": float(reached[c]),
             "answer": lens.class_names[int(answers[c])]} for c in classes]
    fooled = float(np.mean(reached >= opts.fooling_confidence))
    titles = [f"{lens.class_names[c]}: {reached[c]:.3f}" for c in classes]
    colors = ["black" if r >= opts.fooling_confidence else "darkred" for r in reached]
    figure = image_grid(result, titles, f"fooling images: noise optimised for each class ({steps} steps; "
                        f"{fooled:.0%} reach {opts.fooling_confidence:g})", colors=colors)
    return Report(metrics={"fooling/mean_confidence": float(reached.mean()), "fooling/fooled": fooled,
                           "fooling/steps": float(steps)},
                  tables={"fooling": rows}, figures={"fooling/images.png": figure})
