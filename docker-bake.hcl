# docker buildx bake [generic|baked]
# Tags: <IMAGE>:<VERSION>-cuda<CUDA_VERSION> (generic) and
#       <IMAGE>:<VERSION>-cuda<CUDA_VERSION>-<MODEL_TAG> (models baked in).

variable "IMAGE" { default = "runpod/worker-infinity-embedding" }
variable "VERSION" { default = "dev" }
variable "CUDA_VERSION" { default = "12.8.1" }
variable "MODEL_NAMES" { default = "BAAI/bge-small-en-v1.5" }
variable "MODEL_TAG" { default = "bge-small-en-v1.5" }

group "default" { targets = ["generic"] }

target "generic" {
  context   = "."
  platforms = ["linux/amd64"]
  args      = { CUDA_VERSION = "${CUDA_VERSION}" }
  tags      = ["${IMAGE}:${VERSION}-cuda${CUDA_VERSION}"]
}

target "baked" {
  inherits = ["generic"]
  args     = { CUDA_VERSION = "${CUDA_VERSION}", MODEL_NAMES = "${MODEL_NAMES}" }
  secret   = ["id=hf_token,env=HF_TOKEN"]
  tags     = ["${IMAGE}:${VERSION}-cuda${CUDA_VERSION}-${MODEL_TAG}"]
}
