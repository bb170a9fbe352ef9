from setuptools import find_packages, setup

package_name = "hypervla_core"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
    ],
    package_data={package_name: ["*.yaml"]},
    install_requires=["numpy", "torch", "safetensors", "transformers", "h5py", "tqdm", "pyyaml", "cryptography"],
    extras_require={"sim": ["mujoco==3.3.0", "metaworld==3.1.1"], "plots": ["matplotlib"],
                    "onnx": ["onnxruntime", "onnx", "onnxscript"]},
    zip_safe=True,
    maintainer="HyperVLA maintainers",
    maintainer_email="maintainers@hypervla.dev",
    description="HyperVLA model in pure PyTorch: hypernetwork, generated task policies, training, evaluation.",
    license="Apache-2.0",
    entry_points={"console_scripts": ["hypervla = hypervla_core.cli:main"]},
)
