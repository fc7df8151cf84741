"""Exports shared by every task: versioned, atomic serving SavedModels with warmup records and one metadata
record (`saved_model`), the TF Hub-style preprocessing/encoder pair (`hub`), LiteRT conversion with the tokenizer
inside (`litert`, `litert_parity`) and the check of a SavedModel's ops against TF Serving (`serving_ops`). Each
task's own signatures live in `bert_tf.tasks.<task>.export` / `.litert`."""
