"""The served segmentation model's last layer: class probabilities back at the input's size.

Its own module (imports Keras at the top) so that the served model's loader can import it
before loading; dlrun.models skips modules starting with "_" at CLI start.
"""

import keras


@keras.saving.register_keras_serializable(package="dlrun")
class ResizeLike(keras.layers.Layer):
    """[maps (B, h, w, C), reference (B, H, W, ...)] -> maps resized to (B, H, W, C): the network
    works at one size, the user's images come at any size. Keras' Resizing layer takes a fixed
    size only, hence this layer."""

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, x, reference):
        shape = keras.ops.shape(reference)
        return keras.ops.image.resize(x, (shape[1], shape[2]), interpolation=self.interpolation)

    def compute_output_shape(self, x_shape, reference_shape):
        return (x_shape[0], reference_shape[1], reference_shape[2], x_shape[-1])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}
