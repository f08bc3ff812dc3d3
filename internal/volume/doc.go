// Package volume keeps berth's named volumes: a directory of data per
// volume (<root>/volumes/NAME/_data) with its metadata beside it
// (volume.json), and the copy-up that fills a new volume from the image.
// A volume is a plain directory today; a VM backend can pack one into an
// ext4 image from Path without the store changing.
package volume
