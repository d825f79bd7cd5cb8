#!/bin/sh
# Builds the QEMU test image: one initramfs holding the appliance and the card, from Debian's
# packages (the installed linux-image-amd64's modules, WireGuard's among them, busybox-static,
# nftables, iproute2, dnsmasq, wireguard-tools' wg, each binary with the shared libraries ldd
# names), our binaries, and the SAME rootfs overlays the Buildroot images ship
# (buildroot/board/cardwall/...): what the boot test checks is what ships. Buildroot cannot
# download its sources on the CI machine; this can run offline.
#
# usage: build-initramfs.sh OUT_DIR BIN_DIR
#   OUT_DIR  gets initramfs.cpio (uncompressed: no decompression time under TCG) and vmlinuz
#   BIN_DIR  holds the appliance and cardfw binaries (copied stripped of debug info)
set -eu

out=$1
bin=$2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
overlays="$repo/buildroot/board/cardwall"

kernel=$(find /boot -maxdepth 1 -name 'vmlinuz-*-amd64' | sort -V | tail -n 1)
[ -n "$kernel" ] || { echo "no /boot/vmlinuz-*-amd64: install linux-image-amd64" >&2; exit 1; }
kver=${kernel#/boot/vmlinuz-}

root="$out/root"
rm -rf "$root"
mkdir -p "$root"
for dir in bin sbin usr/bin usr/sbin etc/cardwall dev proc sys run tmp var/log var/lib root lib/modules; do
	mkdir -p "$root/$dir"
done
ln -s ../run "$root/var/run"

# Programs and the shared libraries they load (at the paths ldd gives, and the loader).
copy_with_libraries() {
	cp -L "$1" "$root$2"
	ldd "$1" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) .*/\1/p' | while read -r lib; do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list-full); do
	[ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
copy_with_libraries "$(command -v nft)" /usr/sbin/nft
copy_with_libraries "$(command -v dnsmasq)" /usr/sbin/dnsmasq
# iproute2's ip: network namespaces and the fwmark rule cardfw installs (busybox ip has neither).
rm -f "$root/sbin/ip" "$root/bin/ip"
copy_with_libraries "$(command -v ip)" /sbin/ip
# wireguard-tools' wg: the test reads the card's kernel WireGuard link with it, as a second
# opinion beside cardfw's own netlink reading.
copy_with_libraries "$(command -v wg)" /usr/bin/wg
for program in appliance cardfw; do
	objcopy --strip-debug "$bin/$program" "$root/usr/bin/$program"
	copy_with_libraries "$root/usr/bin/$program" /usr/bin/$program.tmp
	rm "$root/usr/bin/$program.tmp"
done

# Kernel modules: what the VM needs and what they depend on; modprobe (busybox) and the
# kernel's own module requests (nft expressions) then find them through modules.dep.
modules="virtio_pci virtio_net configfs dummy_hcd libcomposite usb_f_eem cdc_eem
	nf_tables nft_ct nft_nat nft_chain_nat nft_masq nft_reject_inet nft_reject_ipv4
	nft_fib_inet nft_fib_ipv4 nft_fib_ipv6 nft_tproxy nf_tproxy_ipv4 nf_tproxy_ipv6 nft_socket
	wireguard"
for module in $modules; do
	modprobe -S "$kver" --show-depends "$module" 2> /dev/null | sed -n 's/^insmod \([^ ]*\).*/\1/p'
done | sort -u | while read -r file; do
	mkdir -p "$root$(dirname "$file")"
	cp "$file" "$root$file"
done
cp "/lib/modules/$kver/modules.order" "/lib/modules/$kver/modules.builtin" "$root/lib/modules/$kver/"
[ -e "/lib/modules/$kver/modules.builtin.modinfo" ] && cp "/lib/modules/$kver/modules.builtin.modinfo" "$root/lib/modules/$kver/"
depmod -b "$root" "$kver"
echo "$modules" | tr -s ' \t\n' '\n' | sed '/^$/d' > "$root/etc/modules"

# The images' own files: the appliance (QEMU board) and the card overlays, one rootfs.
cp -a "$overlays/appliance/rootfs-overlay/." "$root/"
cp -a "$overlays/qemu-x86_64/rootfs-overlay/." "$root/"
cp -a "$overlays/card/rootfs-overlay/." "$root/"
# What only the test image has: its init (the two devices in one VM), the control channel,
# and the test's rule set (names the test's origins).
cp "$here/init" "$root/init"
cp "$here/control" "$root/sbin/cardwall-test-control"
cp "$here/rules.txt" "$root/etc/cardwall/rules.txt"
chmod 0755 "$root/init" "$root/sbin/cardwall-test-control"
# root, and the unprivileged user dnsmasq drops to (Buildroot's skeleton has both).
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"

(cd "$root" && find . | sort | cpio -o -H newc --quiet) > "$out/initramfs.cpio"
cp "$kernel" "$out/vmlinuz"
echo "$out/initramfs.cpio: $(wc -c < "$out/initramfs.cpio") bytes (kernel $kver)"
