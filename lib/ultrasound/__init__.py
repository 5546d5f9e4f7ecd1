"""The CNN experiments: VGG-16 and ResNet-18 for breast ultrasound (architectures, trained
checkpoints, training, evaluation), the comparison of explanation maps, the ImageNet models
for natural photographs, and the figures."""
from .. import lazy

__getattr__ = lazy.submodules(__name__, __path__)
