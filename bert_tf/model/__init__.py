"""The BERT model shared by every task: `BertConfig`, the Keras layers, `BertEncoder`, checkpoints of every
supported format (`from_pretrained`, `save_pretrained`, `save_tf1_checkpoint`) and `BertTaskModel`, the base of the
task models (encoder + preprocessor + head). Knows no task."""
