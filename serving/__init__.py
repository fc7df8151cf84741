"""Serving: a TF Serving-protocol model server for any SavedModel, its client, and test helpers.

Modules: `serving.server` (absl program), `serving.model_manager` (loading / version polling),
`serving.batching` (server-side batching), `serving.deadlines` (request deadlines, cancelling model
runs), `serving.service` (Predict/Classify/Regress/metadata/status on the official protos),
`serving.rest` (REST API), `serving.codec` (the JSON tensor codec, shared by server and clients),
`serving.grpc_client` / `serving.rest_client` (one small client each, same methods),
`serving.client` (`ServingClient` factory + CLI), `serving.errors`, `serving.testing` (server
subprocess helper), `serving.toy_model` (small test models).
Nothing here knows about BERT or imports bert_tf, trainers or fixtures.
"""
