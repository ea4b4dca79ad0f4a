package config

import (
	"net/url"
	"regexp"
)

// DefaultChannelURL is where CARTO's release channels are published.
const DefaultChannelURL = "https://releases.carto.com/self-hosted"

// DefaultChannel is the channel a node follows unless told otherwise.
const DefaultChannel = "stable"

// UpgradeConfig is appliance.yaml's upgrade section: where the node looks
// for newer CARTO releases.
type UpgradeConfig struct {
	// ChannelURL is the base URL the channels are published under (https,
	// no credentials); empty means DefaultChannelURL. A mirror inside the
	// customer's network goes here.
	ChannelURL string `yaml:"channel_url,omitempty"`
	// Channel is the channel followed (stable, …); empty means
	// DefaultChannel. The licence says which channels it entitles.
	Channel string `yaml:"channel,omitempty"`
	// KeepBackups is how many upgrade backups are kept in the state dir
	// (the newest; each holds a database dump); 0 means
	// DefaultKeepBackups.
	KeepBackups int `yaml:"keep_backups,omitempty"`
}

// DefaultKeepBackups is how many upgrade backups are kept by default:
// the last upgrade's (what rollback uses) and two before it.
const DefaultKeepBackups = 3

// maxKeepBackups bounds keep_backups: each backup holds a dump.
const maxKeepBackups = 100

// Backups is how many upgrade backups are kept.
func (c UpgradeConfig) Backups() int {
	if c.KeepBackups == 0 {
		return DefaultKeepBackups
	}
	return c.KeepBackups
}

// BaseURL is the channels' base URL in use.
func (c UpgradeConfig) BaseURL() string {
	if c.ChannelURL == "" {
		return DefaultChannelURL
	}
	return c.ChannelURL
}

// ChannelName is the channel in use.
func (c UpgradeConfig) ChannelName() string {
	if c.Channel == "" {
		return DefaultChannel
	}
	return c.Channel
}

var channelName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]*$`)

func validateUpgrade(c UpgradeConfig) error {
	if c.ChannelURL != "" {
		u, err := url.Parse(c.ChannelURL)
		switch {
		case err != nil || u.Host == "" || u.Opaque != "":
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url: not a URL: give the https:// URL the channels are published under, e.g. %s", DefaultChannelURL)
		case u.User != nil:
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url %s: remove the user name and password from the URL: they would show in status and logs", RedactURL(u))
		case u.Scheme != "https":
			return fieldErrorf("upgrade.channel_url", "appliance.yaml upgrade.channel_url %s: releases are fetched over https only: use https://%s%s", RedactURL(u), u.Host, u.EscapedPath())
		}
	}
	if c.KeepBackups < 0 || c.KeepBackups > maxKeepBackups {
		return fieldErrorf("upgrade.keep_backups", "appliance.yaml upgrade.keep_backups %d: keep 1 to %d backups (the last upgrade's is what rollback uses); remove the line for the default, %d", c.KeepBackups, maxKeepBackups, DefaultKeepBackups)
	}
	if c.Channel != "" && !channelName.MatchString(c.Channel) {
		return fieldErrorf("upgrade.channel", "appliance.yaml upgrade.channel %q: a channel name is lowercase letters, digits and '-', e.g. %s", c.Channel, DefaultChannel)
	}
	return nil
}
