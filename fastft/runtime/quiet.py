"""Third-party start-up noise kept off the terminal: lines that read like an install error of fastft's but say
nothing about the run. The run log's `optional` line says instead which accelerations are absent."""
import logging
import warnings

# bitsandbytes' CPU backend (imported by peft, which transformers' Trainer imports) probes the Hugging Face `kernels`
# package for a faster 4-bit matmul on CPUs with AVX512-BF16 and logs this when it is absent; its own kernel does the
# same work.
BNB_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_PROBE = "Failed to load CPU gemm_4bit_forward"
# PEFT's PeftModel reads `is_gradient_checkpointing`, which transformers 5.2x renamed; nothing fastft passes.
PEFT_DEPRECATION = "`is_gradient_checkpointing` is deprecated"


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


_BNB_FILTER = _DropPrefix(BNB_PROBE)


def quiet_third_party() -> None:
    """Install the filters; call before anything imports transformers or peft. Calling it again changes nothing."""
    logging.getLogger(BNB_LOGGER).addFilter(_BNB_FILTER)
    warnings.filterwarnings("ignore", message=PEFT_DEPRECATION, category=FutureWarning)
