# docker buildx bake [generic|baked]
# Tags: <IMAGE>:<VERSION>-cuda<CUDA_VERSION> (generic) and
#       <IMAGE>:<VERSION>-cuda<CUDA_VERSION>-<MODEL_TAG> (models baked in).
# CUDA_VERSION names the image's CUDA line, which requirements-gpu.txt sets (the torch
# index) and .runpod/*.json allow hosts for; the tests keep the three in agreement.

variable "IMAGE" { default = "runpod/worker-infinity-embedding" }
variable "VERSION" { default = "dev" }
variable "CUDA_VERSION" { default = "12.9" }
variable "MODEL_NAMES" { default = "BAAI/bge-small-en-v1.5" }
variable "MODEL_TAG" { default = "bge-small-en-v1.5" }

group "default" { targets = ["generic"] }

target "generic" {
  context   = "."
  platforms = ["linux/amd64"]
  tags      = ["${IMAGE}:${VERSION}-cuda${CUDA_VERSION}"]
}

target "baked" {
  inherits = ["generic"]
  args     = { MODEL_NAMES = "${MODEL_NAMES}" }
  secret   = ["id=hf_token,env=HF_TOKEN"]
  tags     = ["${IMAGE}:${VERSION}-cuda${CUDA_VERSION}-${MODEL_TAG}"]
}
