"""What autograd keeps for backward, counted by storage."""
import torch


def saved_storage_bytes(run, params) -> int:
    """Bytes of the distinct storages autograd keeps for backward while run() executes; storages of `params` (frozen
    weights, adapters) are not activations and are left out."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    storages = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run()
    return sum(storages.values())
