from setuptools import find_packages, setup

setup(
    name="stable-audio-tools",
    version="0.1.0",
    description="Training and inference tools for generative audio models (a from-scratch reimplementation "
                "compatible with Stability AI's stable-audio-tools configs and checkpoints)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["stable_audio_tools", "stable_audio_tools.*"]),
    package_data={"stable_audio_tools": ["configs/**/*.json", "configs/**/*.py"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.5",
        "numpy>=1.24",
        "scipy>=1.10",
        "einops>=0.7",
        "safetensors>=0.4",
        "soundfile>=0.12",
        "julius>=0.2.7",
        "pytorch_lightning>=2.1",
        "huggingface_hub>=0.20",
        "tqdm>=4.60",
        "pillow>=9.1",
        "PyWavelets>=1.4",
        "torchsde>=0.2.5",
        "wandb>=0.15",
        "tensorboard>=2.10",
    ],
    extras_require={
        "flash": ["flash-attn>=2.5"],
        "torchaudio": ["torchaudio>=2.5"],
        "metrics": ["pesq>=0.0.4"],
        "dev": ["pytest>=7", "pytest-timeout>=2.1", "pesq>=0.0.4"],
    },
)
