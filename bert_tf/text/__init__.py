"""Raw text to model inputs, in the graph (tensorflow-text ops): `BertTokenizer` (Google's normalisation +
WordPiece), `BertPacker` ([CLS]/[SEP], segments, truncation, padding), `BertPreprocessor` (the two together,
vocabulary inside) and `batches` (length-bucketed, dynamically padded tf.data batches). Knows no task."""
