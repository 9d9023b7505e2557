"""The VMs the pipeline boots itself: QEMU command lines, the accelerator probe, qemu-img, the boot check and the test-image verb."""
