"""Open Inference Protocol v2 (KServe/Triton's "v2" protocol) over the server's data plane:
`tensors` (datatypes and wire forms), `inference` (metadata and infer, no transport), `rest`
(/v2 on the server's port) and `grpc` (GRPCInferenceService on a port of its own)."""
