"""Pretraining: the MLM + NSP model and losses (`pretrainer`), Google's create_pretraining_data (`data`, local and
parallel; `beam`, the same records on Apache Beam) and dynamic masking (`masking`).

Nothing is imported here: `data`'s worker processes load it without Keras or TensorFlow."""
