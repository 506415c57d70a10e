"""Durable consumer names one service owns and another one watches.

The arrival service judges completions only on what the classifier has indexed (a study whose
last objects are still in the classifier's queue is not quiet yet: the exporter reads the
classifier's tree), so it reads the classifier's consumers' progress by these names.
"""

from fiona_common.messages import InstanceStored

# One per partition of the instance events (services/classifier/main.py).
CLASSIFIER_DURABLES = [f"classifier-p{n:02d}" for n in range(InstanceStored.partitions)]
