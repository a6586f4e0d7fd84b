"""dlrun: a command-line experiment runner for deep learning on TensorFlow/Keras 3.

Importing this package is cheap on purpose: TensorFlow, MLflow and matplotlib are imported
only inside the functions that need them, so `dlrun --help` and `dlrun list` answer at once.
"""

__version__ = "0.1.0"
