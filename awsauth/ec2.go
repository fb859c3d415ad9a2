package awsauth

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2instanceconnect"
	"golang.org/x/crypto/ssh"

	"github.com/airlockhq/airlock/config"
)

// PushKey makes an ephemeral ed25519 key for one session and pushes its
// public half to the ec2-instance-connect resource res for its OS user
// with SendSSHPublicKey. The instance accepts it for 60 seconds, so the
// caller logs in at once. The private half never leaves the returned
// signer, which lives only as long as the session's login.
func (p *Provider) PushKey(ctx context.Context, res *config.Resource) (ssh.Signer, error) {
	const action = "ec2-instance-connect:SendSSHPublicKey"
	a := &res.Auth
	arn := fmt.Sprintf("arn:%s:ec2:%s:<account>:instance/%s", partition(a.Region), a.Region, a.InstanceID)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	id, _, err := p.credentials(ctx, a.Region, a.AssumeRoleARN, action)
	if err != nil {
		return nil, err
	}
	in := &ec2instanceconnect.SendSSHPublicKeyInput{
		InstanceId:     aws.String(a.InstanceID),
		InstanceOSUser: aws.String(res.User),
		SSHPublicKey:   aws.String(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))),
	}
	if a.AvailabilityZone != "" {
		in.AvailabilityZone = aws.String(a.AvailabilityZone)
	}
	out, err := ec2instanceconnect.NewFromConfig(id.cfg).SendSSHPublicKey(ctx, in)
	if err != nil {
		if isContextErr(ctx, err) {
			return nil, &Error{Action: action, Err: err, Msg: "timed out pushing the session key with " + action}
		}
		return nil, classify(err, action, arn)
	}
	if !out.Success {
		return nil, &Error{Action: action, Msg: fmt.Sprintf("EC2 Instance Connect did not accept the session key for %s (request %s)", a.InstanceID, aws.ToString(out.RequestId))}
	}
	return signer, nil
}
