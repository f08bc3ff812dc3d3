// Package volume keeps berth's named volumes: a directory of data per
// volume (<root>/volumes/NAME/_data) with its metadata beside it
// (volume.json), and the copy-up that fills a new volume from the image.
// A volume is a plain directory, for microVMs too: the VM backend shares it
// over virtio-fs (runtime/vm), so containers and VMs use the same data live.
package volume
