"""The stand-in's module split (tinycorelinux/sorter sorter.sh @ bf13d13), as a pure plan."""

from __future__ import annotations

from tests.standin import module_extensions as mx

# A synthetic modules.dep, shaped like a modules_install tree whose modules are gzipped.
MODULES_DEP = """\
kernel/net/bridge/bridge.ko.gz: kernel/net/802/stp.ko.gz kernel/net/llc/llc.ko.gz
kernel/net/bridge/br_netfilter.ko.gz: kernel/net/bridge/bridge.ko.gz kernel/net/802/stp.ko.gz \
kernel/net/llc/llc.ko.gz
kernel/net/802/stp.ko.gz: kernel/net/llc/llc.ko.gz
kernel/net/llc/llc.ko.gz:
kernel/net/netfilter/nf_conntrack.ko.gz: kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.gz \
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.gz kernel/lib/libcrc32c.ko.gz
kernel/net/netfilter/nf_nat.ko.gz: kernel/net/netfilter/nf_conntrack.ko.gz
kernel/net/netfilter/xt_MASQUERADE.ko.gz: kernel/net/netfilter/nf_nat.ko.gz
kernel/net/netfilter/xt_conntrack.ko.gz: kernel/net/netfilter/nf_conntrack.ko.gz
kernel/net/ipv4/netfilter/iptable_nat.ko.gz: kernel/net/netfilter/nf_nat.ko.gz
kernel/net/ipv4/netfilter/nf_defrag_ipv4.ko.gz:
kernel/net/ipv6/netfilter/nf_defrag_ipv6.ko.gz:
kernel/net/ipv6/ipv6.ko.gz:
kernel/lib/libcrc32c.ko.gz:
kernel/drivers/net/veth.ko.gz:
kernel/drivers/net/virtio_net.ko.gz: kernel/drivers/net/net_failover.ko.gz
kernel/drivers/net/net_failover.ko.gz:
kernel/drivers/net/ethernet/intel/e1000/e1000.ko.gz:
kernel/drivers/block/virtio_blk.ko.gz:
kernel/drivers/block/loop.ko.gz:
kernel/fs/squashfs/squashfs.ko.gz:
kernel/fs/ext4/ext4.ko.gz:
kernel/drivers/message/fusion/mptspi.ko.gz: kernel/drivers/message/fusion/mptscsih.ko.gz
kernel/drivers/message/fusion/mptscsih.ko.gz:
kernel/drivers/scsi/sd_mod.ko.gz:
kernel/drivers/scsi/hv_storvsc.ko.gz: kernel/drivers/scsi/scsi_transport_fc.ko.gz
kernel/drivers/scsi/scsi_transport_fc.ko.gz:
kernel/sound/core/snd.ko.gz:
"""


def names(paths) -> set[str]:
    return {mx.module_name(p) for p in paths}


def test_the_sorter_table_splits_modules_as_tiny_core_11():
    plan = mx.plan(mx.parse_modules_dep(MODULES_DEP))
    assert names(plan.extensions["net-bridging"]) == {"bridge", "br_netfilter"}
    assert names(plan.extensions["ipv6-netfilter"]) == {
        "nf_conntrack", "nf_nat", "xt_MASQUERADE", "xt_conntrack", "iptable_nat",
        "nf_defrag_ipv4", "nf_defrag_ipv6", "ipv6"}
    assert names(plan.extensions["scsi"]) == {"mptspi", "mptscsih", "sd_mod"}
    assert names(plan.extensions["filesystems"]) == {"ext4"}
    assert names(plan.extensions["alsa-modules"]) == {"snd"}
    # what no group claims stays in the base, and hv_* / scsi_transport_fc* of the scsi group
    assert names(plan.base) == {
        "stp", "llc", "veth", "virtio_net", "net_failover", "e1000", "virtio_blk", "loop",
        "squashfs", "libcrc32c", "hv_storvsc", "scsi_transport_fc"}
    assert "netfilter" not in plan.extensions  # 11.x has no netfilter-KERNEL


def test_every_module_lands_exactly_once():
    graph = mx.parse_modules_dep(MODULES_DEP)
    plan = mx.plan(graph)
    placed = [*plan.base, *(m for mods in plan.extensions.values() for m in mods)]
    assert sorted(placed) == sorted(graph)


def test_the_meta_extension_depends_on_every_module_extension():
    plan = mx.plan(mx.parse_modules_dep(MODULES_DEP))
    assert plan.meta_dep == [
        "alsa-modules-KERNEL.tcz", "filesystems-KERNEL.tcz", "ipv6-netfilter-KERNEL.tcz",
        "net-bridging-KERNEL.tcz", "scsi-KERNEL.tcz"]


def test_globs_never_cross_a_folder_and_claim_everything_below_a_match():
    assert mx.glob_claims("fs/[bcehjmrux]*/*", "fs/ext4/ext4.ko.gz")
    assert not mx.glob_claims("fs/[bcehjmrux]*/*", "fs/squashfs/squashfs.ko.gz")
    assert mx.glob_claims("net/ipv4", "net/ipv4/netfilter/iptable_nat.ko.gz")
    assert not mx.glob_claims("net/ipv4", "net/ipv4x/a.ko.gz")
    assert mx.extension_of("drivers/gpu/drm/nouveau/nouveau.ko.gz") == "nouveau"  # first wins
    assert mx.extension_of("drivers/gpu/drm/drm.ko.gz") == "graphics"
    assert mx.module_name("kernel/net/netfilter/xt-comment.ko.gz") == "xt_comment"
