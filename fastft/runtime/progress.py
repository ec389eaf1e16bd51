"""Progress bars for the long loops (tokenizing, generating); Trainer draws its own."""


def progress_bar(iterable, desc: str):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False)
