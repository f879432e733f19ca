"""Reading a model's files from where a platform keeps them: local disk, S3-compatible
object storage or HTTP(S), in aligned blocks with several in flight, through a local
block cache. No torch here: the model layer places the bytes into tensors."""
