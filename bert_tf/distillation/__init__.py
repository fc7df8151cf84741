"""Distillation: a fine-tuned teacher's knowledge into a smaller student of the same task (`trainers/distill.py`).

`DistillationTask` (task.py) wraps a fine-tuning task for the shared driver; `student.py` builds the student from the
teacher; `losses.py` holds the distillation and hidden-state losses. Shared layer: it knows no task — each task says
what its student learns (`FinetuningTask.distillation_targets`).
"""
