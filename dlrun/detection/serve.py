"""The served detector's last layer: SSD outputs -> boxes in the input image's pixels.

A Keras layer (saved with the model, rebuilt from its config) so the logged model takes raw
images and answers in the user's units without dlrun code beyond this module."""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="dlrun")
class Detect(keras.layers.Layer):
    """[ssd outputs (B, A, 4 + C + 1), raw images (B, H, W, 3)] -> boxes (B, K, 4) pixel xyxy,
    scores (B, K), classes (B, K) 0-based, count (B,) valid rows; decode + per-class NMS."""

    def __init__(self, feature_sizes, scales, aspect_ratios, score_threshold=0.05, iou_threshold=0.45,
                 max_detections=100, **kwargs):
        super().__init__(**kwargs)
        self.feature_sizes = [int(v) for v in feature_sizes]
        self.scales = [float(v) for v in scales]
        self.aspect_ratios = [float(v) for v in aspect_ratios]
        self.score_threshold, self.iou_threshold = float(score_threshold), float(iou_threshold)
        self.max_detections = int(max_detections)
        from dlrun.detection.boxes import default_boxes

        self._anchors = default_boxes(self.feature_sizes, self.scales, self.aspect_ratios)

    def call(self, inputs):
        import tensorflow as tf

        from dlrun.detection.boxes import detect

        out, image = inputs
        boxes, scores, classes, count = detect(tf.constant(self._anchors), out[..., :4], out[..., 4:],
                                               self.score_threshold, self.iou_threshold,
                                               self.max_detections, self.max_detections)
        shape = tf.cast(tf.shape(image), tf.float32)
        scale = tf.stack([shape[2], shape[1], shape[2], shape[1]])
        return boxes * scale, scores, classes, count

    def compute_output_shape(self, input_shapes):
        b = input_shapes[0][0]
        k = self.max_detections
        return (b, k, 4), (b, k), (b, k), (b,)

    def compute_output_spec(self, inputs):
        b = inputs[0].shape[0]
        k = self.max_detections
        return (keras.KerasTensor((b, k, 4)), keras.KerasTensor((b, k)),
                keras.KerasTensor((b, k), dtype="int32"), keras.KerasTensor((b,), dtype="int32"))

    def get_config(self):
        return {**super().get_config(), "feature_sizes": self.feature_sizes, "scales": self.scales,
                "aspect_ratios": self.aspect_ratios, "score_threshold": self.score_threshold,
                "iou_threshold": self.iou_threshold, "max_detections": self.max_detections}
