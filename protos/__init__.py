"""The wire protocol shared by client and server: the Open Inference Protocol messages and the tensor codec."""
