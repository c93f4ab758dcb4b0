"""A Triton Python-backend model that runs a modelport artifact: `modelport triton build --backend python`
copies this file, unchanged, as ``model.py`` into each version folder, beside the artifact it runs.

Triton starts one instance per ``instance_group`` count; each opens the artifact with modelport's own runner
(ONNX Runtime, OpenVINO, ...; the format and modelport's spec are in the config's ``parameters``), runs one
warm-up request before Triton reports the model ready, then answers each batch Triton's dynamic batcher
hands it with the config's outputs. The Python environment Triton's Python backend runs in needs modelport
and the artifact's runtime installed (``pip install modelport[serve]``).
"""

import numpy as np

from modelport.triton.python_backend import TritonArgsModel


class TritonPythonModel:
    def initialize(self, args):
        self.model = TritonArgsModel(args)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        # Tensors cross by DLPack, not as_numpy() / Tensor(name, array): under NumPy 2 those read zeros and
        # write empty outputs in Triton 2.51's Python backend (its stub reads NumPy 1's array layout).
        name = self.model.input_name
        arrays = [np.from_dlpack(pb_utils.get_input_tensor_by_name(request, name)) for request in requests]
        responses = []
        for result in self.model.run(arrays):
            if isinstance(result, Exception):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(result))))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor.from_dlpack(key, value.__dlpack__()) for key, value in result.items()]))
        return responses

    def finalize(self):
        self.model.close()
